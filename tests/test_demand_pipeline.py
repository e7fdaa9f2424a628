"""The demand branch of the pipeline, built on env.test.yaml: products, metrics shape, forecasts and backtest."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import error_outputs, image_outputs

TASKS = ["get-demand-data", "check-demand-data", "build-daily-revenue", "backtest-demand", "forecast-demand", "register-demand"]
HORIZON = 14   # demand.horizon in env.test.yaml


def test_every_demand_task_leaves_an_executed_notebook_and_html(built):
    for task in TASKS:
        nb = built / "nb" / f"{task}.ipynb"
        assert nb.stat().st_size > 0 and (built / "nb" / f"{task}.html").stat().st_size > 0, task
        errors = error_outputs(nb)
        assert not errors, f"{task}: {errors}"
    images = image_outputs(built / "nb" / "backtest-demand.ipynb")
    assert len(images) >= 2, "the backtest notebook shows forecast-vs-actual and error-by-horizon plots"


@pytest.fixture(scope="module")
def metrics(built) -> dict:
    return json.loads((built / "demand" / "metrics.json").read_text())


def test_metrics_file_has_the_documented_shape(metrics):
    assert metrics["family"] == "demand" and metrics["primary_metric"] == "mase"
    assert metrics["model"]["name"] == "sarima"
    blocks = {"sarima": metrics["model"], **metrics["challengers"], **metrics["baselines"]}
    assert set(metrics["baselines"]) == {"seasonal_naive", "moving_average"} and "lightgbm" in metrics["challengers"]
    for name, block in blocks.items():
        for key in ("mase", "smape", "mae", "rmse", "r2"):
            assert np.isfinite(block[key]), (name, key)
    for key in ("coverage_80", "coverage_95"):
        assert 0 <= metrics["model"][key] <= 1
    assert metrics["model"]["coverage_95"] >= metrics["model"]["coverage_80"]
    assert metrics["data"]["rows"] > 365 and metrics["data"]["transaction_lines"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", metrics["data"]["sha256"])
    assert metrics["params"]["seed"] == 7
    assert metrics["backtest"]["horizon_days"] == HORIZON and len(metrics["backtest"]["sarima_fit_s"]) == metrics["backtest"]["n_origins"]
    assert len(metrics["order_search"]) >= 2 and metrics["order_search"][0]["order"] == metrics["model"]["order"]


def test_models_beat_the_seasonal_naive_baseline(metrics):
    naive = metrics["baselines"]["seasonal_naive"]["mase"]
    assert metrics["model"]["mase"] < naive
    assert metrics["challengers"]["lightgbm"]["mase"] < naive


def test_metrics_are_computed_from_the_saved_backtest(built, metrics):
    bt = pd.read_parquet(built / "demand" / "backtest.parquet")
    assert len(bt) == metrics["backtest"]["n_origins"] * HORIZON
    assert bt.groupby("origin").size().eq(HORIZON).all()
    assert (bt.sarima - bt.actual).abs().mean() == pytest.approx(metrics["model"]["mae"], rel=1e-9)
    assert (bt.lightgbm - bt.actual).abs().mean() == pytest.approx(metrics["challengers"]["lightgbm"]["mae"], rel=1e-9)
    daily = pd.read_parquet(built / "demand" / "daily.parquet").set_index("date").revenue
    for origin, fold in bt.groupby("origin"):   # seasonal naive: the same weekday of the last week before the origin
        last_week = daily[origin - pd.Timedelta(days=6):origin].to_numpy()
        assert fold.seasonal_naive.to_numpy() == pytest.approx(np.resize(last_week, HORIZON))
        assert (fold.date > origin).all() and fold.actual.to_numpy() == pytest.approx(daily[fold.date].to_numpy())


def test_daily_series_keeps_the_revenue_of_the_clean_lines(built):
    lines = pd.read_parquet(built / "demand" / "transactions.parquet")
    daily = pd.read_parquet(built / "demand" / "daily.parquet")
    cells = pd.read_parquet(built / "demand" / "region_daily.parquet")
    assert daily.revenue.sum() == pytest.approx(lines.revenue.sum()) == pytest.approx(cells.revenue.sum())
    assert daily.date.diff().dropna().eq(pd.Timedelta(days=1)).all(), "one row per calendar day, no gaps"
    closed = daily[daily.is_holiday == 1]
    assert len(closed) > 0 and (closed.revenue == 0).all(), "public holidays are closed days with explicit zeros"


def test_forecast_has_dates_bounds_and_a_model_version(built, metrics):
    fc = pd.read_parquet(built / "demand" / "forecast.parquet")
    assert list(fc.columns) == ["date", "forecast", "lo80", "hi80", "lo95", "hi95", "model_version"]
    assert len(fc) == HORIZON
    assert fc.date.min() == pd.Timestamp(metrics["data"]["last_day"]) + pd.Timedelta(days=1)
    assert (fc.lo95 <= fc.lo80).all() and (fc.lo80 <= fc.forecast).all() and (fc.forecast <= fc.hi80).all() and (fc.hi80 <= fc.hi95).all()
    assert (fc.lo95 >= 0).all() and fc.forecast.gt(0).sum() >= HORIZON - 3
    assert fc.model_version.nunique() == 1
    assert fc.model_version[0].startswith("sarima(" + ",".join(map(str, metrics["model"]["order"])) + ")")
    assert metrics["data"]["sha256"][:12] in fc.model_version[0]
