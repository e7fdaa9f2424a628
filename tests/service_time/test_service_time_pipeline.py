"""The service-time pipeline, built end to end on env.test.yaml: products, metrics, incremental rebuilds."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import error_outputs, image_outputs, ploomber_build, product_at

TASKS = ["get-service-data", "clean-geofences", "build-service-features", "train-service-time",
         "evaluate-service-time"]


def test_every_task_leaves_an_executed_notebook_and_html(built):
    for task in TASKS:
        nb = built / "nb" / f"{task}.ipynb"
        html = built / "nb" / f"{task}.html"
        assert nb.stat().st_size > 0 and html.stat().st_size > 0, task
        errors = error_outputs(nb)
        assert not errors, f"{task}: {errors}"


def test_diagnostic_plots_are_in_the_executed_notebooks(built):
    for task, n_plots in {"clean-geofences": 1, "build-service-features": 1, "train-service-time": 2,
                          "evaluate-service-time": 2}.items():
        images = image_outputs(built / "nb" / f"{task}.ipynb")
        assert len(images) >= n_plots, f"{task}: {len(images)} plots"


def test_products_are_on_disk(built):
    st = built / "service_time"
    for rel in ["raw/pings.parquet", "raw/stops.parquet", "raw/customers.parquet", "raw/truth.parquet",
                "visits.parquet", "features.parquet", "model.txt", "metrics.json", "predictions.parquet",
                "geofence.json"]:
        assert (st / rel).stat().st_size > 0, rel
    visits = pd.read_parquet(st / "visits.parquet")
    assert {"stop_id", "entry", "exit", "service_time_s"} <= set(visits.columns)
    assert visits.stop_id.is_unique and (visits.service_time_s > 0).all()
    assert (visits.exit > visits.entry).all()


@pytest.fixture(scope="module")
def metrics(built) -> dict:
    return json.loads(product_at(built, "service_time.metrics").read_text())


def test_metrics_file_has_the_documented_shape(metrics):
    assert metrics["family"] == "service_time" and metrics["primary_metric"] == "mae_s"
    assert metrics["model"]["name"] == "lightgbm"
    for key in ("mae_s", "rmse_s", "r2"):
        assert np.isfinite(metrics["model"][key]), key
    assert set(metrics["baselines"]) >= {"business_rule_7min", "historical_mean", "customer_mean"}
    assert metrics["data"]["rows_train"] > 0 and metrics["data"]["rows_test"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", metrics["data"]["sha256"])
    assert metrics["params"]["seed"] == 7
    assert metrics["oracle_mae_s"] > 0
    for key in ("stop_recall", "stop_precision", "service_time_mae_s"):
        assert key in metrics["geofence"], key
    importance = {row["feature"]: row["gain_share"] for row in metrics["feature_importance"]}
    assert 0 < sum(importance.values()) <= 1 and all(v >= 0 for v in importance.values())


def test_model_beats_all_three_baselines(metrics):
    model = metrics["model"]["mae_s"]
    for name, baseline in metrics["baselines"].items():
        assert model < baseline["mae_s"], f"LightGBM {model:.1f} s is not below {name} {baseline['mae_s']:.1f} s"
    assert model >= metrics["oracle_mae_s"] * 0.9, "a model far below the noise floor means leakage"


def test_metrics_are_computed_from_the_saved_predictions(built, metrics):
    pred = pd.read_parquet(product_at(built, "service_time.predictions"))
    assert len(pred) == metrics["data"]["rows_test"]
    mae = (pred["service_time_s"] - pred["lightgbm"]).abs().mean()
    assert mae == pytest.approx(metrics["model"]["mae_s"], rel=1e-6)
    rule = (pred["service_time_s"] - 420).abs().mean()
    assert rule == pytest.approx(metrics["baselines"]["business_rule_7min"]["mae_s"], rel=1e-6)


def test_geofence_cleaning_is_accurate_on_the_test_run(metrics):
    g = metrics["geofence"]
    assert g["stop_recall"] >= 0.95 and g["stop_precision"] >= 0.95
    assert g["service_time_mae_s"] < 30


def test_a_second_build_with_nothing_changed_runs_no_task(built):
    status = product_at(built, "build.status")     # every build records its outcome there, a no-op build too
    mtimes = {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file() and not p.name.startswith(".") and p != status}
    done = ploomber_build(built)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes, "a product was rewritten"
    assert json.loads(status.read_text())["status"] == "ok"
    ran = re.findall(r"^(\S+)\s+True\s", done.stdout, flags=re.M)
    assert not ran, f"tasks re-ran: {ran}\n{done.stdout}"
