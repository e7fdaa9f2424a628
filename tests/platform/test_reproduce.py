"""`kronkers reproduce` of the tiny build's service-time and demand versions: each rebuilt from its run's record in a
scratch folder and compared with the registered figures; and the refusals (an unknown version, a commit the repository
does not hold, uncommitted changes). Works on a copy of the build's store (the reports are logged to it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT
from kronkers_ml.platform.registry import _client
from kronkers_ml.families import FAMILIES
from kronkers_ml.platform.reproduce import BUILD_ENV_ARTIFACT, REPORT_DIR, ReproduceError
from kronkers_ml.platform.reproduce import reproduce as rebuild
from kronkers_ml.platform.tracking import tracking_uri


def copy_store(built: Path, to: Path) -> dict:
    shutil.copytree(built / "mlflow", to / "mlflow")
    return {"out": to, "uri": tracking_uri(to)}


def reproduce(store: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([str(BIN / "kronkers"), "reproduce", *args, "--out", str(store["out"])],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def store(built, tmp_path_factory):
    return copy_store(built, tmp_path_factory.mktemp("reproduce-store"))


@pytest.mark.parametrize("model,key", [("service-time", "service_time"), ("demand", "demand")])
def test_reproduce_rebuilds_a_version_within_tolerance(store, built, tmp_path, model, key):
    version = json.loads((built / key / "registration.json").read_text())["version"]
    client = _client(store["uri"])
    run = client.get_run(client.get_model_version(model, version).run_id)
    # a run made from uncommitted changes (a build while developing) is rebuilt from this checkout; a clean one from a worktree
    done = reproduce(store, model, str(version), "--scratch", str(tmp_path / "scratch"), "--allow-dirty")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads((tmp_path / "scratch" / "report.json").read_text())
    assert report["ok"] and report["model"] == model and report["version"] == str(version)
    assert report["source"] == ("checkout" if run.data.tags["git.commit"].endswith("-dirty") else "worktree")
    assert "REPRODUCED" in done.stdout and "NOT REPRODUCED" not in done.stdout
    rows = {r["name"]: r for r in report["comparisons"]}
    primary = run.data.tags["primary_metric"]
    assert rows[primary]["ok"] and rows[primary]["registered"] == run.data.metrics[primary]
    assert set(run.data.metrics) <= set(rows)                                        # every logged metric compared
    assert rows["data.sha256"]["ok"] and rows["data.sha256"]["reproduced"] == run.data.tags["data.sha256"]
    preds = [r for r in report["comparisons"] if r["kind"] == "predictions"]
    assert preds and all(r["ok"] for r in preds)                                     # the logged predictions, column by column
    assert all(r["ok"] is not False for r in report["comparisons"])
    logged = Path(run.info.artifact_uri) / REPORT_DIR                                # the report kept with the version
    assert json.loads((logged / "report.json").read_text())["comparisons"] == report["comparisons"]
    assert (logged / "report.md").read_text().startswith(f"# Reproduce {model} version {version}: REPRODUCED")
    assert not (tmp_path / "scratch" / "outputs").exists()                           # rebuilt outputs removed once compared
    assert str(tmp_path / "scratch" / "src") not in subprocess.run(["git", "worktree", "list"], cwd=ROOT,
                                                                    capture_output=True, text=True).stdout
    assert not list(ROOT.glob("env.reproduce-*.yaml"))


def test_reproduce_refuses_what_it_cannot_rebuild(built, tmp_path):
    store = copy_store(built, tmp_path / "store")
    done = reproduce(store, "service-time", "999")                                   # the command: exit 2, the reason
    assert done.returncode == 2 and "has no version 999" in done.stderr, done.stderr
    with pytest.raises(ReproduceError, match="unknown family 'no-such-family'"):    # the rest in this process (faster)
        rebuild(store["uri"], FAMILIES, "no-such-family", "1", repo=ROOT)
    client = _client(store["uri"])
    version = json.loads((built / "service_time" / "registration.json").read_text())["version"]
    run_id = client.get_model_version("service-time", version).run_id
    assert BUILD_ENV_ARTIFACT in {a.path for a in client.list_artifacts(run_id, "inputs")}   # what a rebuild needs was logged
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for commit, message in ((f"{'0' * 40}", f"commit {'0' * 40} of the run is not in the repository"),
                            (f"{head}-dirty", "trained on uncommitted changes"), ("unknown", "records no git commit")):
        client.set_tag(run_id, "git.commit", commit)
        with pytest.raises(ReproduceError, match=re.escape(message)):
            rebuild(store["uri"], FAMILIES, "service-time", version, repo=ROOT, scratch=tmp_path / "scratch")
        assert not (tmp_path / "scratch").exists()                                   # refused before anything was written
