"""The shared stores of a cluster: a PostgreSQL server on loopback (started by the test, `local_postgres`), an
`mlflow server` on it with proxied artifacts, and the workbench pointed at it by MLFLOW_TRACKING_URI (gate, champion,
rollback, the model service); Optuna trials of the service-time tuning on both workers of a real 2-worker Dask
cluster (`local_cluster`) against one study in PostgreSQL. Skipped, with the reason, where PostgreSQL is not
installed (`make` installs Debian's `postgresql`)."""
from __future__ import annotations

import os
import subprocess

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from conftest import BIN, ROOT, free_port, running_service, wait_up
from kronkers_ml.families import FAMILIES
from kronkers_ml.metrics import mae
from kronkers_ml.platform.access import create_key, load_roles
from kronkers_ml.platform.cluster import PostgresMissing, local_cluster, local_postgres, trials_on_cluster
from kronkers_ml.platform.registry import champion_version, register_and_gate
from kronkers_ml.platform.tracking import log_training_run, use_store
from kronkers_ml.service_time.data import ZONES
from kronkers_ml.service_time.family import log_service_time_model
from kronkers_ml.service_time.features import FEATURES
from kronkers_ml.service_time.model import time_split, tune_lightgbm

ROLES = ROOT / "config" / "roles.yaml"


@pytest.fixture(scope="module")
def postgres():
    try:
        with local_postgres(["mlflow", "optuna"]) as pg:
            yield pg
    except PostgresMissing as e:
        pytest.skip(f"PostgreSQL is needed for the shared tracking server and Optuna studies: {e}")


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    "`mlflow server` on the PostgreSQL database `mlflow`, serving (proxying) the artifacts of a folder of its own."
    where = tmp_path_factory.mktemp("tracking")
    artifacts, port = where / "artifacts", free_port()
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres.url("mlflow"), "--serve-artifacts",
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(where / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/health", proc, where / "server.log", 120, "mlflow server")
        yield {"uri": base, "artifacts": artifacts, "where": where}
    finally:
        os.killpg(proc.pid, 15)                    # its state is in PostgreSQL and the folder: nothing to lose
        try: proc.wait(timeout=5)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, 9); proc.wait()


def stops(n: int, seed: int) -> pd.DataFrame:
    "`n` planned stops with every feature the service takes (non-negative; zone one of ZONES) and a service time."
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.integers(0, 8, n).astype(float) for f in FEATURES if f != "zone"})
    frame["zone"] = pd.Categorical(rng.choice(list(ZONES), n), categories=list(ZONES))
    frame["service_time_s"] = 120 + 30 * frame.n_items + 20 * frame.stairs + rng.normal(0, 5, n)
    frame["stop_id"] = [f"s{i}" for i in range(n)]
    return frame


def test_workbench_on_a_shared_tracking_server(tracking_server, postgres, tmp_path):
    """Register two versions through the family gate on the server, resolve `champion`, serve it with the model
    service, roll back with `kronkers models rollback` and serve the previous version after a reload."""
    uri = tracking_server["uri"]
    data = stops(300, seed=3)
    train, held = data.iloc[:240], data.iloc[240:]
    params = {"objective": "l1", "verbose": -1, "seed": 3, "min_data_in_leaf": 5, "num_threads": 1}
    boosters = {"flat": lgb.train(params, lgb.Dataset(train[FEATURES], train.service_time_s), 1),
                "good": lgb.train(params, lgb.Dataset(train[FEATURES], train.service_time_s), 80)}
    rule = float(mae(held.service_time_s, np.full(len(held), 420.0)))
    use_store(uri, "service-time")                                # the server's own (proxied) artifact location
    versions = {}
    for name, booster in boosters.items():
        path = tmp_path / f"{name}.txt"
        booster.save_model(str(path))
        figure = float(mae(held.service_time_s, booster.predict(held[FEATURES])))
        metrics = {"family": "service_time", "primary_metric": "mae_s", "model": {"name": "lightgbm", "mae_s": figure},
                   "data": {"rows_train": 240, "rows_test": 60, "sha256": "x"},
                   "baselines": {"business_rule_7min": {"mae_s": rule}}}
        run = log_training_run("service-time", {"seed": 3}, metrics, lambda: log_service_time_model(path))
        record = register_and_gate(uri, FAMILIES["service_time"], run["model_uri"], run["run_id"], metrics, held,
                                   expected=figure)
        assert record["decision"] == "promoted", record
        versions[name] = record["version"]
    assert champion_version(uri, "service-time") == versions["good"] == "2"
    import mlflow
    champion = mlflow.pyfunc.load_model("models:/service-time@champion")       # resolved through the server
    assert np.allclose(champion.predict(held[FEATURES].head(5)), boosters["good"].predict(held[FEATURES].head(5)))
    # the artifacts went through the server into its destination folder; the registry lives in PostgreSQL
    assert list(tracking_server["artifacts"].rglob("MLmodel"))
    import sqlalchemy
    engine = sqlalchemy.create_engine(postgres.url("mlflow"))
    try:
        with engine.connect() as con:
            alias = con.execute(sqlalchemy.text("select version from registered_model_aliases "
                                                "where name='service-time' and alias='champion'")).scalar()
    finally:
        engine.dispose()
    assert str(alias) == versions["good"]

    out = tmp_path / "service"
    roles = load_roles(ROLES)
    keys = {role: create_key(out / "state" / "keys.json", role, roles, f"test {role}")[1] for role in ("admin", "operations")}
    opts = ["--out", str(out), "--roles", str(ROLES), "--state-dir", str(out / "state")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    rows = held.head(4)[["stop_id", *FEATURES]].astype(object).to_dict("records")
    for r in rows: r["zone"] = str(r["zone"])
    with running_service(["--models", "service-time", *opts], tmp_path / "service.log", env) as client:
        def predict():
            r = client.post("/v1/models/service-time/predict", json={"stops": rows}, headers={"X-API-Key": keys["operations"]})
            assert r.status_code == 200, r.text
            return r.json()
        body = predict()
        assert body["version"] == versions["good"]
        assert np.allclose([p["service_time_s"] for p in body["predictions"]], boosters["good"].predict(held[FEATURES].head(4)))
        done = subprocess.run([str(BIN / "kronkers"), "models", "rollback", "service-time", *opts], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert champion_version(uri, "service-time") == versions["flat"]
        r = client.post("/v1/admin/reload", headers={"X-API-Key": keys["admin"]})
        assert r.status_code == 200 and r.json()["models"]["service-time"] == {"from": versions["good"], "to": versions["flat"]}
        body = predict()
        assert body["version"] == versions["flat"]
        assert np.allclose([p["service_time_s"] for p in body["predictions"]], boosters["flat"].predict(held[FEATURES].head(4)))


def test_optuna_trials_of_the_tuning_run_on_both_workers_in_one_study(postgres, tmp_path):
    """`tune_lightgbm` with `trials_on_cluster`: its trials run on both workers of a 2-worker cluster against one
    study in PostgreSQL; trial numbers are unique, no parameters are evaluated twice, the study has its trials."""
    import optuna
    frame = stops(480, seed=5).assign(date=pd.Timestamp("2025-01-01") + pd.to_timedelta(np.arange(480) % 150, unit="D"))
    split = time_split(frame, "date", valid_months=1, test_months=1)
    storage, n_trials = postgres.url("optuna"), 8
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with local_cluster(2, env=env, cwd=ROOT, logs=tmp_path / "dask") as scheduler:
        result = tune_lightgbm(split.train, split.valid, n_trials=n_trials, seed=11, progress=False,
                               features=["n_items", "stairs", "zone"], categorical=["zone"], num_threads=1,
                               max_rounds=60, early_stopping_rounds=10, storage=storage, study_name="tune-on-two",
                               optimize=trials_on_cluster(scheduler, storage, seed=11))
    trials = optuna.load_study(study_name="tune-on-two", storage=storage).trials
    assert n_trials <= len(trials) <= n_trials + 1 and len(result.study.trials) == len(trials)   # a loop may start one more
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))                        # unique, none skipped
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "two trials evaluated the same parameters"
    workers = {t.user_attrs["worker"] for t in trials}
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(workers) == 2 and len(pids) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers), workers
    assert result.best_mae == min(t.value for t in trials)
