"""The operations plan, built on env.test.yaml: its figures follow from the models' outputs it combines."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import error_outputs, image_outputs, product_at
from kronkers_ml.operations.plan import PLAN_QUANTITIES


@pytest.fixture(scope="module")
def plan(built) -> pd.DataFrame:
    return pd.read_parquet(product_at(built, "operations.plan"))


@pytest.fixture(scope="module")
def summary(built) -> dict:
    return json.loads(product_at(built, "operations.plan_summary").read_text())


def test_plan_covers_the_forecast_horizon(built, plan, summary):
    forecast = pd.read_parquet(product_at(built, "demand.forecast"))
    assert plan.date.tolist() == forecast.date.tolist() and summary["horizon_days"] == len(forecast)
    assert plan.revenue.to_numpy() == pytest.approx(forecast.forecast.clip(lower=0).to_numpy())
    nb = built / "nb" / "plan-operations.ipynb"
    assert not error_outputs(nb) and image_outputs(nb)


def test_inputs_are_measured_on_the_models_outputs(built, summary):
    inputs = summary["inputs"]
    lines = pd.read_parquet(product_at(built, "demand.transactions"))
    recent = lines[lines.date > lines.date.max() - pd.Timedelta(days=28)]
    assert inputs["order_value_nok"] == pytest.approx(recent.groupby("invoice_id").revenue.sum().mean())
    assert inputs["items_per_order"] == pytest.approx(recent.groupby("invoice_id").quantity.sum().mean())
    pred = pd.read_parquet(product_at(built, "service_time.predictions"))
    newest = pred[pred.date > pred.date.max() - pd.Timedelta(days=28)]
    assert inputs["service_time"]["mean_s"] == pytest.approx(newest.lightgbm.mean())
    cleaning = {r["rule"]: r for r in json.loads(product_at(built, "demand.transactions_summary").read_text())["cleaning"]}
    kept = json.loads(product_at(built, "demand.transactions_summary").read_text())["rows_clean"]
    assert inputs["returns"]["rate"] == pytest.approx(cleaning["return"]["rows"] / kept) and inputs["returns"]["rate"] > 0
    assert 60 < inputs["driving_s_per_stop"] < 3600 and inputs["driving_source"].startswith("measured")
    # the returns classifier is wired upstream: its measured auto share wins over env.yaml's (unset) value
    review = json.loads(product_at(built, "returns.metrics").read_text())["review"]
    assert inputs["auto_share"] == pytest.approx(review["auto_share"]) and 0 <= inputs["auto_share"] <= 1
    assert inputs["auto_share_source"] == "returns/metrics.json review.auto_share"


def test_totals_follow_from_the_forecast_and_the_service_time_model(built, plan, summary):
    inputs, totals = summary["inputs"], summary["totals"]
    forecast = pd.read_parquet(product_at(built, "demand.forecast")).forecast.clip(lower=0)
    deliveries = forecast.sum() / inputs["order_value_nok"] * inputs["delivered_share"]
    assert plan.deliveries.sum() == pytest.approx(deliveries) and totals["deliveries"] == pytest.approx(deliveries)
    per_stop_h = (inputs["service_time"]["mean_s"] + inputs["driving_s_per_stop"]) / 3600
    assert plan.driver_hours.to_numpy() == pytest.approx(plan.deliveries.to_numpy() * per_stop_h)
    assert plan.drivers.to_numpy() == pytest.approx(plan.driver_hours.to_numpy() / inputs["driver_shift_hours"])
    returned = plan.deliveries * inputs["items_per_order"] * inputs["returns"]["rate"]
    assert plan.returned_items.to_numpy() == pytest.approx(returned.to_numpy())
    # only the items the classifier sends to review are inspected by hand: the auto share read from the returns metrics
    auto = json.loads(product_at(built, "returns.metrics").read_text())["review"]["auto_share"]
    inspection_h = returned.to_numpy() * (1 - auto) * inputs["inspection_min_per_item"] / 60
    assert plan.inspection_hours.to_numpy() == pytest.approx(inspection_h)
    assert plan.warehouse_staff.to_numpy() == pytest.approx(inspection_h / inputs["warehouse_shift_hours"])
    assert totals["inspection_hours"] == pytest.approx(inspection_h.sum())
    by_hand = returned.to_numpy() * inputs["inspection_min_per_item"] / 60 / inputs["warehouse_shift_hours"]
    assert plan.warehouse_staff.to_numpy() == pytest.approx(by_hand * (1 - auto))   # staff scale with the reviewed share


def test_intervals_are_ordered_and_carry_the_forecast_uncertainty(built, plan, summary):
    for q in PLAN_QUANTITIES:
        lo95, lo80, mid, hi80, hi95 = (plan[c].to_numpy() for c in (f"{q}_lo95", f"{q}_lo80", q, f"{q}_hi80", f"{q}_hi95"))
        assert (lo95 <= lo80 + 1e-9).all() and (lo80 <= mid + 1e-9).all(), q
        assert (mid <= hi80 + 1e-9).all() and (hi80 <= hi95 + 1e-9).all(), q
    forecast = pd.read_parquet(product_at(built, "demand.forecast"))
    open_days = (forecast.forecast > 0).to_numpy()
    width = (forecast.hi95 - forecast.lo95).to_numpy()[open_days]
    # the simulated revenue gives back the forecast's own bounds and median, within Monte Carlo error
    for sim, own in [("revenue_lo95", "lo95"), ("revenue_lo80", "lo80"), ("revenue_median", "forecast"),
                     ("revenue_hi80", "hi80"), ("revenue_hi95", "hi95")]:
        assert np.abs(plan[sim].to_numpy()[open_days] - forecast[own].to_numpy()[open_days]).max() < 0.05 * width.max(), sim
    # driver-hours: the median of the draws lies at the plan computed at the point forecast, within Monte Carlo error
    busy = plan[plan.deliveries > 0]
    spread = (busy.driver_hours_hi95 - busy.driver_hours_lo95)
    assert (spread > 0).all() and (np.abs(busy.driver_hours_median - busy.driver_hours) < 0.05 * spread).all()
