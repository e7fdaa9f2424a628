"""Backups that restore: `kronkers backup` taken while the service answers requests and a pipeline registers, restored
with `kronkers restore` into a fresh folder after the original is gone, served again; damaged archives refused.

Uses a copy of the tiny build's store (`built`, built once per test run), so the build's own store is never modified."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import BIN, ROOT, running_service
from kronkers_ml.platform.access import create_key, load_roles
from kronkers_ml.platform.registry import champion_stack, history
from kronkers_ml.platform.tracking import tracking_uri
from kronkers_ml.service_time.features import FEATURES

ROLES = ROOT / "config" / "roles.yaml"
SERVED = "service-time,demand"

# First the champion history the backup must keep: the champion's model registered again as a new version, promoted by
# hand, then rolled back (both audited by the command line). Then a pipeline's register step, again and again until the
# file `stop` exists: a run of the tiny build's service-time model registered through the gate (the same model as the
# champion: a tie, so it is rejected and the champion stays).
REGISTER = """
import json, sys
from pathlib import Path
import pandas as pd
from mlflow import MlflowClient
from kronkers_ml.cli import main
from kronkers_ml.families import FAMILIES
from kronkers_ml.platform.registry import register_and_gate, register_version
from kronkers_ml.platform.tracking import artifact_root, log_training_run, tracking_uri, use_store
from kronkers_ml.service_time.family import log_service_time_model
built, stop, opts = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
out = Path(opts[opts.index("--out") + 1])
uri = tracking_uri(out)
use_store(uri, "service-time", artifact_root(out))
champion = MlflowClient(uri, uri).get_model_version("service-time", "1")
version = register_version(uri, "service-time", champion.source, champion.run_id)
assert main(["models", "promote", "service-time", version, "--reason", "tried by hand", *opts]) == 0
assert main(["models", "rollback", "service-time", *opts]) == 0
print("promoted and rolled back", version, flush=True)
st = built / "service_time"
metrics = json.loads((st / "metrics.json").read_text())
split = json.loads((st / "training.json").read_text())["split"]["test"]["from"]
features = pd.read_parquet(st / "features.parquet")
heldout = features[features.date >= pd.Timestamp(split)]
for _ in range(40):
    if stop.exists(): break
    run = log_training_run("service-time", {"seed": 7}, metrics, lambda: log_service_time_model(st / "model.txt"))
    rec = register_and_gate(uri, FAMILIES["service_time"], run["model_uri"], run["run_id"], metrics, heldout)
    print(json.dumps({"version": rec["version"], "decision": rec["decision"]}), flush=True)
"""


def _env() -> dict:
    "The environment of our subprocesses: the store and state come from the options only."
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRONKERS_") and k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"}


def _kronkers(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "kronkers"), *args], capture_output=True, text=True, env=_env(), timeout=300)
    if check: assert done.returncode == 0, done.stderr
    return done


def _opts(out: Path, state: Path) -> list[str]:
    return ["--out", str(out), "--roles", str(ROLES), "--state-dir", str(state)]


def _stops(built: Path, n: int) -> list[dict]:
    "n held-out stops of the tiny build as the predict endpoint takes them."
    st = built / "service_time"
    split = json.loads((st / "training.json").read_text())["split"]["test"]["from"]
    part = pd.read_parquet(st / "features.parquet").query("date >= @pd.Timestamp(@split)").head(n)
    rows = part[FEATURES].astype(object).where(part[FEATURES].notna(), None).to_dict("records")
    for r, sid in zip(rows, part.stop_id): r["zone"] = str(r["zone"]); r["stop_id"] = str(sid)
    return rows


def _answers(client, keys: dict, stops: list[dict]) -> dict:
    "What the service serves: its champion versions, service-time predictions for `stops` and a 7-day demand forecast."
    ready = client.get("/ready").json()
    pred = client.post("/v1/models/service-time/predict", json={"stops": stops}, headers={"X-API-Key": keys["operations"]})
    fc = client.get("/v1/models/demand/forecast", params={"horizon": 7}, headers={"X-API-Key": keys["procurement"]})
    assert pred.status_code == 200 and fc.status_code == 200, (pred.text, fc.text)
    return {"models": ready["models"], "predict": pred.json(), "forecast": fc.json()}


def _store_rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try: return con.execute(sql).fetchall()
    finally: con.close()


@pytest.fixture(scope="module")
def backed_up(built, tmp_path_factory):
    """A registry (a copy of the tiny build's store, with a hand promotion and a rollback in its history), served;
    backed up twice while the service answers requests and a registration loop runs; the original folder then moved away."""
    base = tmp_path_factory.mktemp("backup")
    src = base / "src"
    shutil.copytree(built / "mlflow", src / "outputs" / "mlflow")
    uri = tracking_uri(src / "outputs")                        # the copy's paths pointed at the copy
    roles = load_roles(ROLES)
    keys = {role: create_key(src / "state" / "keys.json", role, roles, f"test {role}")[1] for role in ("operations", "procurement")}
    opts = _opts(src / "outputs", src / "state")
    stops = _stops(built, 5)
    errors, served, stop = [], [0], threading.Event()
    with running_service(["--models", SERVED, *opts], base / "src-service.log", _env(), timeout_s=300) as client:
        def traffic():                                           # a client of its own, patient on a loaded machine
            with httpx.Client(base_url=client.base_url, timeout=300) as own:
                while not stop.is_set():
                    try: _answers(own, keys, stops); served[0] += 1
                    except Exception as e: errors.append(repr(e)); return
        stop_file = base / "stop-registering"
        reg_log = open(base / "register.log", "w")                 # a file, not a pipe: a full pipe would block it
        reg = subprocess.Popen([sys.executable, "-c", REGISTER, str(built), str(stop_file), *opts],
                               stdout=subprocess.PIPE, stderr=reg_log, text=True, env=_env())
        thread = threading.Thread(target=traffic, daemon=True)
        try:
            said = [reg.stdout.readline()]
            while said[-1] and not said[-1].startswith("promoted and rolled back"):   # after the commands' own output
                said.append(reg.stdout.readline())
            assert said[-1], f"{''.join(said)}{(base / 'register.log').read_text()[-3000:]}"
            v2 = said[-1].split()[-1]
            thread.start()
            first = json.loads(reg.stdout.readline())             # one registration done, the next one running
            archives, during = [], []
            for i in (1, 2):
                backup = _kronkers("backup", "--to", str(base / f"backup-{i}.tar.gz"), *opts)
                archives.append(json.loads(backup.stdout))
                during.append(reg.poll() is None and thread.is_alive())
        finally:
            stop_file.touch(); stop.set()
            out, _ = reg.communicate(timeout=300)
            if thread.is_alive(): thread.join(timeout=60)
            reg_log.close()
        assert reg.returncode == 0, (base / "register.log").read_text()[-3000:]
        registered = [first, *(json.loads(line) for line in out.splitlines())]
        source = _answers(client, keys, stops)
    source_history = history(uri, "service-time")
    source_stack = champion_stack(uri, "service-time")
    audit = (src / "state" / "audit.jsonl").read_bytes()
    moved = base / "src-moved"
    src.rename(moved)                                               # the original folder is gone from its place
    return {"base": base, "archives": archives, "during": during, "errors": errors, "served": served[0],
            "registered": registered, "source": source, "history": source_history, "stack": source_stack,
            "audit": audit, "keys": keys, "stops": stops, "v2": v2}


def test_backup_ran_while_the_service_served_and_a_registration_ran(backed_up):
    assert backed_up["during"] == [True, True], "a backup finished after the registration loop or the traffic stopped"
    assert not backed_up["errors"] and backed_up["served"] > 0
    assert len(backed_up["registered"]) >= 2 and {r["decision"] for r in backed_up["registered"]} == {"rejected"}
    for a in backed_up["archives"]:
        assert Path(a["archive"]).is_file() and oct(Path(a["archive"]).stat().st_mode & 0o777) == "0o600"
        assert a["store_counts"]["model_versions"] >= 4                    # 3 of the build, v2, and the loop's first
    assert not list(backed_up["base"].glob(".*"))                           # no temporary file or folder left


def test_restored_service_serves_the_same_champions_predictions_history_and_audit(backed_up):
    base, keys = backed_up["base"], backed_up["keys"]
    arch = Path(backed_up["archives"][0]["archive"])
    restored = base / "restored"
    done = _kronkers("restore", str(arch), "--to", str(restored))
    assert json.loads(done.stdout)["restored_to"] == str(restored)
    opts = _opts(restored, restored / "state")                          # as restore says: --out DIR --state-dir DIR/state
    audit = (restored / "state" / "audit.jsonl").read_bytes()         # before the restored service adds its own lines
    db = restored / "mlflow" / "mlflow.db"
    # consistent: every version in the snapshot has its model files, and every path points into the restored folder
    locations = _store_rows(db, "select name, version, storage_location from model_versions")
    assert all(loc.startswith(str(restored / "mlflow" / "artifacts") + "/") and Path(loc, "MLmodel").is_file()
               for _, _, loc in locations), locations
    assert not _store_rows(db, "select artifact_uri from runs where artifact_uri like '%src/outputs%'")
    versions = sorted(int(v) for n, v, _ in locations if n == "service-time")
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 3
    with running_service(["--models", SERVED, *opts], base / "restored-service.log", _env(), timeout_s=300) as client:
        again = _answers(client, keys, backed_up["stops"])             # the same keys work: the keys file came back
    assert again == backed_up["source"]
    assert again["models"]["service-time"] == "1"                      # rolled back to 1 before the backup
    uri = tracking_uri(restored)
    assert champion_stack(uri, "service-time") == backed_up["stack"] == ["1"]
    restored_history = history(uri, "service-time")
    source_history = backed_up["history"]
    done_before = int(backed_up["registered"][0]["version"])          # registered and gated before the backups began
    assert max(versions) >= done_before
    pd.testing.assert_frame_equal(restored_history[restored_history.version <= done_before].reset_index(drop=True),
                                  source_history[source_history.version <= done_before].reset_index(drop=True))
    v2 = restored_history.set_index("version").loc[int(backed_up["v2"])]
    assert v2.promoted_by.startswith("cli:") and isinstance(v2.rolled_back_at, str)
    shown = _kronkers("models", "history", "service-time", *opts).stdout
    assert "champion stack (oldest first): ['1']" in shown and str(v2.rolled_back_at) in shown
    assert audit and backed_up["audit"].startswith(audit)              # the trail up to the backup, every line whole
    lines = [json.loads(line) for line in audit.decode().splitlines()]
    assert [a["action"] for a in lines if (a["endpoint"] or "").startswith("cli models")] == ["promote", "rollback"]
    assert sum(a["endpoint"] == "POST /v1/models/service-time/predict" for a in lines) >= 1


def test_damaged_archives_and_a_non_empty_folder_are_refused(backed_up):
    base = backed_up["base"]
    data = Path(backed_up["archives"][1]["archive"]).read_bytes()
    (base / "truncated.tar.gz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data); flipped[len(data) * 3 // 4] ^= 0x01
    (base / "altered.tar.gz").write_bytes(bytes(flipped))
    for name, says in (("truncated", "is damaged or truncated"), ("altered", "is damaged or truncated")):
        done = _kronkers("restore", str(base / f"{name}.tar.gz"), "--to", str(base / f"from-{name}"), check=False)
        assert done.returncode == 2 and says in done.stderr and f"{name}.tar.gz" in done.stderr, done.stderr
        assert not (base / f"from-{name}").exists()
    (base / "busy").mkdir(); (base / "busy" / "notes.txt").write_text("mine")
    done = _kronkers("restore", str(backed_up["archives"][1]["archive"]), "--to", str(base / "busy"), check=False)
    assert done.returncode == 2 and "is not an empty folder" in done.stderr
    assert os.listdir(base / "busy") == ["notes.txt"]
    assert not [p.name for p in base.iterdir() if ".restore-" in p.name]   # no half-restored folder beside them


@pytest.fixture
def postgres():
    "A throw-away PostgreSQL server with the databases `mlflow` and `restored` (skipped where PostgreSQL is not installed)."
    from kronkers_ml.platform.cluster import PostgresMissing, local_postgres
    try:
        with local_postgres(["mlflow", "restored"]) as pg:
            yield pg
    except PostgresMissing as e:
        pytest.skip(f"PostgreSQL is needed for a backup of a store on PostgreSQL: {e}")


def test_a_store_on_postgresql_is_dumped_and_restored_into_an_empty_database(postgres, tmp_path):
    """An MLflow store on a throw-away PostgreSQL server with one registered model and its champion: `kronkers backup`
    puts its pg_dump in the archive with its checksum in the manifest; `kronkers restore --database` loads it into an
    empty database and points its artifact paths at the restored folder; the model, its champion and its files are found
    again there. A PostgreSQL archive without --database, and a database that is not empty, are refused."""
    import hashlib
    import tarfile
    import mlflow
    from mlflow import MlflowClient
    from kronkers_ml.platform.registry import champion_version, register_version, set_champion
    from kronkers_ml.platform.tracking import use_store
    pg = postgres
    try:
        uri, artifacts = pg.url("mlflow"), tmp_path / "src" / "mlflow" / "artifacts"
        use_store(uri, "toy", str(artifacts))
        with mlflow.start_run() as run:
            mlflow.log_dict({"weights": [1, 2, 3]}, "model/weights.json")
        version = register_version(uri, "toy", f"runs:/{run.info.run_id}/model", run.info.run_id)
        set_champion(uri, "toy", version, "test", "first")
        mlflow.set_tracking_uri(None); mlflow.set_registry_uri(None)

        state = tmp_path / "src" / "state"; state.mkdir()
        (state / "keys.json").write_text('{"keys": []}\n')
        archive = tmp_path / "pg.tar.gz"
        done = _kronkers("backup", "--to", str(archive), "--tracking-uri", uri, *_opts(tmp_path / "src", state))
        assert json.loads(done.stdout)["store_counts"]["model_versions"] == 1
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
            dump = tar.extractfile("mlflow/mlflow.pgdump").read()
        assert manifest["store"] == "postgresql" and "mlflow/mlflow.db" not in manifest["files"]
        assert manifest["files"]["mlflow/mlflow.pgdump"] == {"sha256": hashlib.sha256(dump).hexdigest(), "size": len(dump),
                                                              "mode": 0o600}
        assert dump.startswith(b"PGDMP")                                        # pg_dump's custom format
        assert f"mlflow/artifacts/{run.info.run_id}/artifacts/model/weights.json" in manifest["files"]

        shutil.move(tmp_path / "src", tmp_path / "gone")                     # the artifacts' original place is no more
        refused = _kronkers("restore", str(archive), "--to", str(tmp_path / "r1"), check=False)
        assert refused.returncode == 2 and "holds a PostgreSQL dump" in refused.stderr and "--database" in refused.stderr
        assert not (tmp_path / "r1").exists()

        to, target = tmp_path / "restored", pg.url("restored")
        done = _kronkers("restore", str(archive), "--to", str(to), "--database", target)
        assert json.loads(done.stdout)["serve_with"].startswith(f"MLFLOW_TRACKING_URI={target} kronkers serve --out {to}")
        assert champion_version(target, "toy") == version                        # the registered model found again
        mv = MlflowClient(target, target).get_model_version("toy", version)
        run_dir = Path(MlflowClient(target).get_run(mv.run_id).info.artifact_uri.removeprefix("file://"))
        assert run_dir.is_relative_to(to / "mlflow" / "artifacts"), run_dir
        assert json.loads((run_dir / "model" / "weights.json").read_text()) == {"weights": [1, 2, 3]}
        assert (to / "mlflow" / "mlflow.pgdump").read_bytes() == dump          # the checked dump stays with the files

        again = _kronkers("restore", str(archive), "--to", str(tmp_path / "r2"), "--database", target, check=False)
        assert again.returncode == 2 and "is not empty" in again.stderr and not (tmp_path / "r2").exists()
    finally:
        mlflow.set_tracking_uri(None); mlflow.set_registry_uri(None)
