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
