"""The promotion gate is one decision: on a real MLflow store, a check that fails leaves the champion where it was."""
from __future__ import annotations

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest

from kronkers_ml.service_time.data import ZONES
from kronkers_ml.metrics import mae
from kronkers_ml.families import FAMILIES
from kronkers_ml.platform.registry import GATE_RTOL, GateError, champion_version, history, register_and_gate, show_version
from kronkers_ml.service_time.family import log_service_time_model

SERVICE_TIME = FAMILIES["service_time"]
from kronkers_ml.platform.tracking import artifact_root, log_training_run, tracking_uri, use_store


@pytest.fixture
def store(tmp_path):
    uri = tracking_uri(tmp_path, {})
    use_store(uri, "service-time", artifact_root(tmp_path))
    yield uri
    mlflow.set_tracking_uri(None)


def boosters_and_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"n_items": rng.integers(1, 30, 240).astype(float),
                      "zone": pd.Categorical(rng.choice(list(ZONES), 240), categories=list(ZONES))})
    y = 120 + 10 * x.n_items + rng.normal(0, 5, 240)
    params = {"objective": "l1", "verbose": -1, "seed": seed, "min_data_in_leaf": 5}
    good = lgb.train(params, lgb.Dataset(x.iloc[:200], y[:200]), 60)
    flat = lgb.train(params, lgb.Dataset(x.iloc[:200], y[:200]), 1)
    held = x.iloc[200:].assign(service_time_s=y[200:])
    metrics = {"family": "service_time", "primary_metric": "mae_s", "model": {"name": "lightgbm", "mae_s": 1.0},
               "data": {"rows_train": 200, "rows_test": 40, "sha256": "x"},
               "baselines": {"business_rule_7min": {"mae_s": float(mae(held.service_time_s, np.full(len(held), 420.0)))}}}
    return good, flat, held, metrics


def log(tmp_path, booster, metrics):
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    return log_training_run("service-time", {}, metrics, lambda: log_service_time_model(path))


def test_a_figure_the_gate_cannot_reproduce_keeps_the_champion(store, tmp_path):
    good, flat, held, metrics = boosters_and_data()
    run = log(tmp_path, flat, metrics)
    first = register_and_gate(store, SERVICE_TIME, run["model_uri"], run["run_id"], metrics, held,
                              expected=float(mae(held.service_time_s, flat.predict(held[["n_items", "zone"]]))))
    assert first["decision"] == "promoted" and champion_version(store, "service-time") == "1"

    true_mae = float(mae(held.service_time_s, good.predict(held[["n_items", "zone"]])))
    reported = true_mae * (1 + 10 * GATE_RTOL)          # the pipeline reported another figure than the model's
    run = log(tmp_path, good, metrics)                  # a better model: it would have been promoted
    with pytest.raises(GateError) as err:
        register_and_gate(store, SERVICE_TIME, run["model_uri"], run["run_id"], metrics, held, expected=reported)
    message = str(err.value)
    assert repr(reported) in message and repr(true_mae) in message and f"rtol={GATE_RTOL!r}" in message
    assert "the champion stays version 1" in message
    assert champion_version(store, "service-time") == "1"
    tags = show_version(store, "service-time", 2)["tags"]
    assert tags["gate.decision"] == "error" and repr(reported) in tags["gate.reason"]
    assert "promoted_at" not in tags

    # the same model with the figure it does reproduce goes through
    again = register_and_gate(store, SERVICE_TIME, run["model_uri"], run["run_id"], metrics, held, expected=true_mae)
    assert (again["version"], again["decision"], champion_version(store, "service-time")) == ("3", "promoted", "3")
    assert history(store, "service-time").gate.tolist() == ["promoted", "error", "promoted"]


@pytest.mark.parametrize("change, message", [
    (lambda m, h: ({**m, "baselines": {}}, h), "no baseline with 'mae_s'"),
    (lambda m, h: ({**m, "baselines": {"business_rule_7min": {"mae_s": float("nan")}}}, h), "must be finite"),
    (lambda m, h: (m, h.iloc[:0]), "held-out data is empty"),
])
def test_bad_gate_inputs_register_nothing_and_move_nothing(store, tmp_path, change, message):
    good, flat, held, metrics = boosters_and_data()
    run = log(tmp_path, flat, metrics)
    register_and_gate(store, SERVICE_TIME, run["model_uri"], run["run_id"], metrics, held)
    run = log(tmp_path, good, metrics)
    bad_metrics, bad_held = change(metrics, held)
    with pytest.raises(GateError, match=message):
        register_and_gate(store, SERVICE_TIME, run["model_uri"], run["run_id"], bad_metrics, bad_held)
    assert champion_version(store, "service-time") == "1"
    assert history(store, "service-time").version.tolist() == [1]
