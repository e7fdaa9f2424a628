"""Data versions: a real transaction log kept by content when it is read, replaced after training, and brought back
byte for byte by `kronkers data restore`; a damaged blob refused; the tiny build's generated data recorded by its
generator's settings and seed (and its Fashion-MNIST photos stored). Real subprocesses, a real MLflow store."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import BIN, ROOT
from kronkers_ml.demand.data import load_transactions
from kronkers_ml.demand.real_logs import write_real_log
from kronkers_ml.platform.data import (DataStoreError, input_version, list_versions, models_by_version, read_version,
                                       model_data_version, restore_model_data, store_url,
                                       version_tags)
from kronkers_ml.platform.registry import _client, register_version
from kronkers_ml.platform.tracking import artifact_root, log_training_run, tracking_uri, use_store


def kronkers(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KRONKERS_DATA_STORE")}
    return subprocess.run([str(BIN / "kronkers"), "data", *args, "--out", str(out), "--state-dir", str(out / "state"),
                           "--roles", str(ROOT / "config" / "roles.yaml")], capture_output=True, text=True, env=env, timeout=300)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained_on_real_log(tmp_path_factory):
    """A model version trained on the real CDNOW log: the log stored by the get-data step's own call, read, and the run
    logged and registered with the version's tags, as the register task does (the model itself is not the point here:
    the version points at its run's model path without files)."""
    import mlflow

    tmp = tmp_path_factory.mktemp("real-log")
    full = write_real_log("cdnow", tmp / "cdnow-full.csv")
    out, log = tmp / "out", tmp / "real" / "cdnow.csv"                                 # a small copy: its first 3,000 lines
    log.parent.mkdir(); log.write_text("".join(full.read_text().splitlines(keepends=True)[:3001]))
    record = input_version(str(log), store_url(out, environ={}), "kronkers_ml.demand.generator.simulate_transactions", {}, 7)
    lines = load_transactions(str(log), tz="UTC")
    uri = tracking_uri(out, {})
    use_store(uri, "demand-real", artifact_root(out))
    metrics = {"family": "demand", "primary_metric": "mae", "model": {"mae": float(lines.quantity.mean())}, "baselines": {},
               "data": {"rows": len(lines), "sha256": record["version"]}}
    run = log_training_run("demand-real", {"seed": 7}, metrics,
                           lambda: SimpleNamespace(model_uri=f"runs:/{mlflow.active_run().info.run_id}/model"),
                           tags=version_tags(record))
    version = register_version(uri, "demand-real", run["model_uri"], run["run_id"])
    mlflow.set_tracking_uri(None); mlflow.set_registry_uri(None)
    return {"out": out, "log": log, "record": record, "version": version, "sha": sha(log), "bytes": log.read_bytes()[:200]}


def test_a_replaced_real_log_is_restored_byte_for_byte(trained_on_real_log, tmp_path):
    t = trained_on_real_log
    out, log, record = t["out"], t["log"], t["record"]
    assert record["kind"] == "stored" and record["n_files"] == 1 and record["bytes"] == log.stat().st_size
    log.write_text(log.read_text().replace("1997", "2027"))          # next month's log under the same name
    assert sha(log) != t["sha"]

    listed = kronkers(out, "list")
    assert listed.returncode == 0, listed.stderr
    assert record["version"] in listed.stdout and f"demand-real v{t['version']}" in listed.stdout and str(log.resolve()) in listed.stdout

    done = kronkers(out, "restore", "demand-real", str(t["version"]), "--to", str(tmp_path / "back"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    back = Path(summary["path"])
    assert back == tmp_path / "back" / "cdnow.csv" and summary["version"] == record["version"]
    assert sha(back) == t["sha"] and back.read_bytes()[:200] == t["bytes"]

    with pytest.raises(DataStoreError, match="not empty"):
        restore_model_data(tracking_uri(out, {}), "demand-real", t["version"], tmp_path / "back")
    assert sha(back) == t["sha"]                                                        # the target left as it was


def test_a_damaged_blob_is_refused(trained_on_real_log, tmp_path):
    t = trained_on_real_log
    store = store_url(t["out"], environ={})
    entry = read_version(store, t["record"]["version"])["files"][0]
    blob = Path(store) / "blobs" / entry["sha256"][:2] / entry["sha256"]
    data = bytearray(blob.read_bytes()); data[len(data) // 2] ^= 1; blob.write_bytes(bytes(data))
    with pytest.raises(DataStoreError, match="cdnow.csv is damaged"):
        restore_model_data(tracking_uri(t["out"], {}), "demand-real", t["version"], tmp_path / "bad", store)
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.restoring-*"))
    blob.write_bytes(b"")                                                               # truncated
    with pytest.raises(DataStoreError, match="damaged"):
        restore_model_data(tracking_uri(t["out"], {}), "demand-real", t["version"], tmp_path / "bad", store)
    blob.unlink()                                                                       # gone
    with pytest.raises(DataStoreError, match="missing"):
        restore_model_data(tracking_uri(t["out"], {}), "demand-real", t["version"], tmp_path / "bad", store)


def test_the_tiny_build_records_generated_data_by_settings_and_seed(built, tmp_path):
    reg = json.loads((built / "service_time" / "registration.json").read_text())
    tiny = yaml.safe_load((ROOT / "env.test.yaml").read_text())                       # the settings it was built with
    done = kronkers(built, "restore", "service-time", str(reg["version"]), "--to", str(tmp_path / "gen"))
    assert done.returncode == 0, done.stderr
    assert "generated data" in done.stderr and "nothing is stored" in done.stderr
    rec = json.loads(done.stdout)                                                       # the generator's settings and seed
    assert rec["kind"] == "generated" and rec["generator"] == "kronkers_ml.service_time.generator.simulate_service_data"
    assert rec["seed"] == tiny["seed"] and rec["settings"]["n_customers"] == tiny["service_time"]["n_customers"]
    assert not (tmp_path / "gen").exists()                                              # nothing written
    demand = json.loads((built / "demand" / "registration.json").read_text())
    rec = model_data_version(tracking_uri(built, {}), "demand", demand["version"])
    assert rec["kind"] == "generated" and rec["seed"] == tiny["seed"] and rec["settings"]["days"] == tiny["demand"]["days"]
    # the returns family reads its photos from outside the repository: stored, and tagged on its run
    uri = tracking_uri(built, {})
    returns = json.loads((built / "returns" / "registration.json").read_text())
    run = _client(uri).get_run(_client(uri).get_model_version("returns", returns["version"]).run_id)
    stored = run.data.tags["data.version"]
    assert stored != "generated" and f"returns v{returns['version']}" in models_by_version(uri)[stored]
    assert {f["path"] for f in read_version(store_url(built, environ={}), stored)["files"]} >= {"train-images-idx3-ubyte.gz"}
    assert [m["id"] for m in list_versions(store_url(built, environ={}))] == [stored]
