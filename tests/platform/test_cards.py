"""Model cards of the tiny build's registered versions, one per family: made from what the pipeline logged, kept with
the version in MLflow, shown by `kronkers models card`. Works on a copy of the build's store (cards are written to it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT
from kronkers_ml.platform.cards import CARD_TAG, read_card
from kronkers_ml.platform.registry import _client
from kronkers_ml.platform.tracking import tracking_uri

FAMILIES = {"service-time": "service_time", "demand": "demand", "returns": "returns"}


@pytest.fixture(scope="module")
def store(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("cards")
    shutil.copytree(built / "mlflow", out / "mlflow")
    return {"out": out, "uri": tracking_uri(out)}


@pytest.mark.parametrize("model", list(FAMILIES))
def test_a_card_for_each_family_from_what_the_pipeline_logged(store, built, model):
    key = FAMILIES[model]
    reg = json.loads((built / key / "registration.json").read_text())
    metrics = json.loads((built / key / "metrics.json").read_text())
    card = read_card(store["uri"], model, reg["version"])
    text = card["markdown"]
    assert text.startswith(f"# Model card: {model} version {reg['version']}")
    assert f"**{reg['decision']}**: {reg['reason']}" in text                          # the gate decision and its figures
    assert f"| candidate (this version) | {reg['candidate']:.6g} |" in text
    for name, value in reg["baselines"].items():
        assert f"| baseline {name} | {value:.6g} |" in text
    primary = metrics["primary_metric"]
    assert f"| {primary} | {metrics['model'][primary]:.6g} |" in text               # the run's metrics
    sha = (reg.get("data") or {}).get("sha256") or metrics["data"]["sha256"]
    assert f"| data.sha256 | {sha} |" in text and "| seed | " in text               # data digest and settings
    mv = _client(store["uri"]).get_model_version(model, reg["version"])
    assert mv.tags[CARD_TAG] == card["path"] == f"model-card/v{reg['version']}/card.md"   # kept with the version
    folder = Path(_client(store["uri"]).get_run(mv.run_id).info.artifact_uri) / "model-card" / f"v{reg['version']}"
    assert (folder / "card.md").read_text() == text
    for fig in card["figures"]:
        assert f"![{fig}]({fig})" in text and (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if model == "service-time":
        assert card["figures"], "the evaluation notebook's plots are missing from the card"


def test_models_card_command_shows_the_stored_card(store):
    reg_version = _client(store["uri"]).get_model_version_by_alias("service-time", "champion").version
    stored = read_card(store["uri"], "service-time", reg_version)["markdown"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([str(BIN / "kronkers"), "models", "card", "service-time", str(reg_version), "--out", str(store["out"]),
                           "--state-dir", str(store["out"] / "state"), "--roles", str(ROOT / "config" / "roles.yaml")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == stored.strip()
    bad = subprocess.run([str(BIN / "kronkers"), "models", "card", "service-time", "999", "--out", str(store["out"]),
                          "--state-dir", str(store["out"] / "state")], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "kronkers: error:" in bad.stderr


def _kronkers(*args, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([str(BIN / "kronkers"), *args, "--out", str(out), "--state-dir", str(out / "state"),
                           "--roles", str(ROOT / "config" / "roles.yaml")], capture_output=True, text=True, env=env, timeout=300)


def test_models_diff_sets_two_versions_side_by_side(store, built):
    """A second service-time version in the copy of the build's store: a run like the build's with another seed, other
    metrics and another data digest, registered from the build's model (nothing trained again)."""
    reg = json.loads((built / "service_time" / "registration.json").read_text())
    client = _client(store["uri"])
    mv = client.get_model_version("service-time", reg["version"])
    first = client.get_run(mv.run_id)
    primary = first.data.tags["primary_metric"]
    run = client.create_run(first.info.experiment_id)
    params = {**first.data.params, "seed": str(int(first.data.params.get("seed", "0")) + 1)}
    for k, v in params.items(): client.log_param(run.info.run_id, k, v)
    metrics = {**first.data.metrics, primary: first.data.metrics[primary] * 0.5}
    for k, v in metrics.items(): client.log_metric(run.info.run_id, k, v)
    for k, v in {**first.data.tags, "data.sha256": "0" * 64}.items():
        if not k.startswith("mlflow."): client.set_tag(run.info.run_id, k, v)
    client.set_terminated(run.info.run_id)
    import mlflow
    mlflow.set_tracking_uri(store["uri"])                       # the registry resolves the models:/ source through it
    try:
        second = client.create_model_version("service-time", mv.source, run.info.run_id).version
    finally:
        mlflow.set_tracking_uri(None)

    done = _kronkers("models", "diff", "service-time", str(reg["version"]), str(second), out=store["out"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"# Model diff: service-time version {reg['version']} (A) and version {second} (B)")
    assert f"| gate.decision | {reg['decision']} | - |" in text                       # the gate decision and its figures
    assert f"| gate.candidate | {reg['candidate']:.6g} | - |" in text
    a, b = first.data.metrics[primary], metrics[primary]
    assert f"| {primary} | {a:.6g} | {b:.6g} | {b - a:+.6g} | B |" in text          # lower is better: B halves the error
    assert f"({primary}: lower is better)" in text
    sha = first.data.tags["data.sha256"]
    assert f"| data.sha256 | {sha} | {'0' * 64} | differs |" in text
    commit = first.data.tags.get("git.commit", "-")
    assert f"| git.commit | {commit} | {commit} | same |" in text
    settings = text.split("## Settings that differ", 1)[1]
    assert f"| seed | {first.data.params.get('seed', '(not set)')} | {params['seed']} |" in settings
    assert settings.count("\n| ") == 2                                                    # the header row and the seed only

    for bad in (("service-time", str(reg["version"]), "999"), ("no-such-model", "1", "2")):
        refused = _kronkers("models", "diff", *bad, out=store["out"])
        assert refused.returncode == 2 and "kronkers: error:" in refused.stderr and "Traceback" not in refused.stderr


def test_models_diff_of_a_hand_made_store_without_a_family(tmp_path):
    """Two versions of a model no family knows: the direction comes from the versions' gate tags; a metric whose
    direction is not known is shown with its difference but not judged."""
    import mlflow
    from mlflow.pyfunc import PythonModel
    from kronkers_ml.platform.registry import register_version
    from kronkers_ml.platform.tracking import artifact_root, log_training_run, use_store

    class Const(PythonModel):
        def predict(self, context, model_input, params=None): return [1.0] * len(model_input)

    uri = tracking_uri(tmp_path)
    use_store(uri, "toy", artifact_root(tmp_path))
    try:
        for seed, score, share in ((1, 0.7, 0.2), (2, 0.6, 0.3)):
            m = {"family": "toy", "primary_metric": "score", "model": {"score": score, "share": share},
                 "baselines": {"rule": {"score": 0.5}}, "data": {"rows_train": 10, "rows_test": 3, "sha256": f"sha{seed}"}}
            run = log_training_run("toy", {"seed": seed, "split": 0.2}, m, lambda: mlflow.pyfunc.log_model(
                name="model", python_model=Const(), pip_requirements=[]), commit="c0ffee")
            register_version(uri, "toy", run["model_uri"], run["run_id"], {"gate.decision": "promoted", "gate.metric": "score",
                                                                            "gate.direction": "higher"})
    finally:
        mlflow.set_tracking_uri(None); mlflow.set_registry_uri(None)
    done = _kronkers("models", "diff", "toy", "1", "2", out=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| score | 0.7 | 0.6 | -0.1 | A |" in done.stdout                  # higher is better, from the gate tags
    assert "| share | 0.2 | 0.3 | +0.1 | ? |" in done.stdout
    assert "| baseline.rule.score | 0.5 | 0.5 | +0 | same |" in done.stdout
    assert "| data.sha256 | sha1 | sha2 | differs |" in done.stdout and "| seed | 1 | 2 |" in done.stdout
    assert "| split |" not in done.stdout
