"""State that must survive and outputs that can move: keys and the audit log in the state folder (0600 from creation,
expiry, the one-time move from outputs/service/), and a copied outputs/ that serves its own models after the original is deleted."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import mlflow
import pytest

from conftest import BIN, ROOT, running_service
from kronkers_ml.platform.access import create_key, load_roles, parse_expiry, read_audit

ROLES = ROOT / "config" / "roles.yaml"


def kronkers(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kronkers"), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_and_audit_log_live_in_the_state_folder_0600_and_outlive_the_outputs(tmp_path):
    env = {**os.environ, "KRONKERS_STATE_DIR": str(tmp_path / "state"), "KRONKERS_OUT": str(tmp_path / "outputs")}
    env.pop("KRONKERS_KEYS_FILE", None); env.pop("KRONKERS_AUDIT_LOG", None)
    done = kronkers("keys", "create", "--role", "operations", "--expires", "90d", "--roles", str(ROLES), env=env)
    assert done.returncode == 0, done.stderr
    assert "expires: 20" in done.stdout
    keys = tmp_path / "state" / "keys.json"
    assert mode(keys) == 0o600 and mode(keys.parent) == 0o700
    assert not (tmp_path / "outputs").exists(), "keys must not go into the outputs folder"
    listed = kronkers("keys", "list", "--roles", str(ROLES), env=env).stdout
    assert "expires_at" in listed and "active" in listed
    # a failed promotion is audited into the state folder, 0600
    kronkers("models", "rollback", "service-time", "--roles", str(ROLES), env=env)
    audit = tmp_path / "state" / "audit.jsonl"
    assert mode(audit) == 0o600 and read_audit(audit).action.tolist() == ["rollback"]


def test_key_file_is_never_readable_by_others_while_it_is_written(tmp_path):
    "The keys file is created 0600 (not chmodded afterwards): even with umask 000 no version of it was ever wider."
    script = ("import os; os.umask(0); from kronkers_ml.platform.access import create_key, load_roles; "
              f"create_key({str(tmp_path / 's' / 'keys.json')!r}, 'admin', load_roles({str(ROLES)!r}))")
    subprocess.run([str(BIN / "python"), "-c", script], check=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert mode(tmp_path / "s" / "keys.json") == 0o600 and mode(tmp_path / "s") == 0o700
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["keys.json", "keys.json.lock"]
    assert mode(tmp_path / "s" / "keys.json.lock") == 0o600


def test_old_keys_in_outputs_service_are_moved_once_with_a_note(tmp_path):
    old = tmp_path / "outputs" / "service"
    create_key(old / "keys.json", "admin", load_roles(ROLES), "legacy")
    env = {**os.environ, "KRONKERS_STATE_DIR": str(tmp_path / "state"), "KRONKERS_OUT": str(tmp_path / "outputs")}
    done = kronkers("keys", "list", "--roles", str(ROLES), env=env)
    assert done.returncode == 0 and "legacy" in done.stdout
    assert "moved" in done.stderr and "state" in done.stderr
    assert not (old / "keys.json").exists() and mode(tmp_path / "state" / "keys.json") == 0o600
    again = kronkers("keys", "list", "--roles", str(ROLES), env=env)
    assert "legacy" in again.stdout and "note" not in again.stderr


def serve_args(out: Path, state: Path) -> list[str]:
    return ["--out", str(out), "--models", "service-time", "--roles", str(ROLES), "--state-dir", str(state)]


def service_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KRONKERS_KEYS_FILE", "KRONKERS_AUDIT_LOG")}


def model_dir(out: Path) -> str:
    "Where the store at `out` says the champion's files are."
    uri = f"sqlite:///{(out / 'mlflow' / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(uri, uri)
    return client.get_model_version_download_uri("service-time", client.get_model_version_by_alias("service-time", "champion").version)


def test_a_copied_outputs_folder_serves_its_own_champion_after_the_original_is_deleted(built, tmp_path):
    first, second, state = tmp_path / "first", tmp_path / "second", tmp_path / "state"
    shutil.copytree(built, first)
    roles = load_roles(ROLES)
    admin = create_key(state / "keys.json", "admin", roles, "admin")[1]
    expiring = create_key(state / "keys.json", "operations", roles, "short", parse_expiry("1h"))[1]
    with running_service(serve_args(first, state), tmp_path / "first.log", service_env(), timeout_s=240) as c:
        served = c.get("/v1/models/service-time", headers={"X-API-Key": admin}).json()["served_version"]
        assert c.get("/v1/models", headers={"X-API-Key": expiring}).status_code == 200
    # the copy's store now names its own artifacts, not the build's (which still exists)
    assert model_dir(first).startswith(str((first / "mlflow" / "artifacts").resolve()))
    shutil.copytree(first, second)
    shutil.rmtree(first)
    with running_service(serve_args(second, state), tmp_path / "second.log", service_env(), timeout_s=240) as c:
        # ready (running_service waits for /ready 200): the champion was loaded from the copy, the original being gone
        assert c.get("/v1/models/service-time", headers={"X-API-Key": admin}).json()["served_version"] == served
    assert model_dir(second).startswith(str((second / "mlflow" / "artifacts").resolve()))
    assert "service-time" in read_audit(state / "audit.jsonl").model.dropna().tolist()


def test_an_expired_key_gets_401_saying_it_expired(built, tmp_path):
    state = tmp_path / "state"
    key_id, key = create_key(state / "keys.json", "operations", load_roles(ROLES), "short", parse_expiry("1h"))
    # its expiry moved into the past (as if the hour had passed)
    data = json.loads((state / "keys.json").read_text())
    data["keys"][0]["expires_at"] = "2020-01-01T00:00:00+00:00"
    (state / "keys.json").write_text(json.dumps(data))
    with running_service(serve_args(built, state), tmp_path / "svc.log", service_env(), timeout_s=240) as c:
        r = c.get("/v1/models", headers={"X-API-Key": key})
        assert r.status_code == 401 and f"API key {key_id} expired at 2020-01-01" in r.json()["detail"]
        wrong = c.get("/v1/models", headers={"X-API-Key": key[:-2] + "xx"})
        assert wrong.status_code == 401 and "expired" not in wrong.text
    listed = kronkers("keys", "list", "--roles", str(ROLES), "--state-dir", str(state)).stdout
    assert "expired" in listed and "2020-01-01" in listed
