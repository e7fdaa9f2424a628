"""The demand branch of the pipeline, built on env.test.yaml: products, metrics shape, the choice of model, intervals,\nforecasts and backtest; and the candidates on small series: closed weekdays, unplanned closures."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import error_outputs, image_outputs, product_at

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
    return json.loads(product_at(built, "demand.metrics").read_text())


def test_metrics_file_has_the_documented_shape(metrics):
    assert metrics["family"] == "demand" and metrics["primary_metric"] == "mase"
    names = metrics["selection"]["candidates"]
    assert metrics["model"]["name"] in names and set(metrics["challengers"]) == set(names) - {metrics["model"]["name"]}
    blocks = {metrics["model"]["name"]: metrics["model"], **metrics["challengers"], **metrics["baselines"]}
    assert set(metrics["baselines"]) == {"seasonal_naive", "moving_average"}
    for name, block in blocks.items():
        for key in ("mase", "smape", "mae", "rmse", "r2"):
            assert np.isfinite(block[key]), (name, key)
    for key in ("coverage_80", "coverage_95"):
        assert 0 <= metrics["model"][key] <= 1
    assert metrics["model"]["coverage_95"] >= metrics["model"]["coverage_80"]
    assert metrics["data"]["rows"] > 365 and metrics["data"]["transaction_lines"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", metrics["data"]["sha256"])
    assert metrics["params"]["seed"] == 7
    bt = metrics["backtest"]
    assert bt["horizon_days"] == HORIZON and all(len(v) == bt["n_origins"] + bt["n_valid"] for v in bt["fit_s"].values())
    assert set(bt["fit_s"]) == set(names) and not bt["errors"]


def test_the_chosen_model_beats_the_seasonal_naive_baseline(metrics):
    assert metrics["model"]["mase"] < metrics["baselines"]["seasonal_naive"]["mase"]


def test_metrics_are_computed_from_the_saved_backtest(built, metrics):
    bt = pd.read_parquet(product_at(built, "demand.backtest"))
    assert len(bt) == metrics["backtest"]["n_origins"] * HORIZON
    assert bt.groupby("origin").size().eq(HORIZON).all()
    for origin, fold in bt.groupby("origin"):          # each test fold: the forecast of the model chosen at its origin
        name = metrics["selection"]["at_test_origins"][str(origin.date())]
        assert (fold.model_name == name).all() and (fold.model == fold[name]).all()
    assert (bt.model - bt.actual).abs().mean() == pytest.approx(metrics["model"]["mae"], rel=1e-9)
    for name, block in metrics["challengers"].items():
        assert (bt[name] - bt.actual).abs().mean() == pytest.approx(block["mae"], rel=1e-9), name
    daily = pd.read_parquet(product_at(built, "demand.daily")).set_index("date").revenue
    for origin, fold in bt.groupby("origin"):   # seasonal naive: the same weekday of the last week before the origin
        last_week = daily[origin - pd.Timedelta(days=6):origin].to_numpy()
        assert fold.seasonal_naive.to_numpy() == pytest.approx(np.resize(last_week, HORIZON))
        assert (fold.date > origin).all() and fold.actual.to_numpy() == pytest.approx(daily[fold.date].to_numpy())


def test_each_choice_is_made_on_folds_that_had_ended_and_the_served_one_on_the_latest(built, metrics):
    from kronkers_ml.demand.backtest import choose_model
    valid = pd.read_parquet(product_at(built, "demand.validation"))
    bt = pd.read_parquet(product_at(built, "demand.backtest"))
    assert valid.date.max() <= bt.origin.min(), "no validation day is a day of a test fold"
    daily = pd.read_parquet(product_at(built, "demand.daily"))
    names, n_valid = metrics["selection"]["candidates"], metrics["backtest"]["n_valid"]
    folds = pd.concat([valid, bt], ignore_index=True)
    ends = {o: o + pd.Timedelta(days=HORIZON) for o in folds.origin.unique()}
    for origin in bt.origin.unique():                    # the choice again, from the folds over by that origin alone
        window = sorted(o for o, end in ends.items() if end <= origin)[-n_valid:]
        assert len(window) == n_valid and max(ends[o] for o in window) <= origin
        chosen, _ = choose_model(folds[folds.origin.isin(window)], daily, names)
        assert chosen == metrics["selection"]["at_test_origins"][str(pd.Timestamp(origin).date())]
    latest = sorted(ends)[-n_valid:]                     # the model served: the same rule on the latest folds
    assert [str(pd.Timestamp(o).date()) for o in latest] == metrics["selection"]["valid_origins"]
    chosen, means = choose_model(folds[folds.origin.isin(latest)], daily, names)
    assert chosen == metrics["model"]["name"]
    assert means.to_dict() == pytest.approx(metrics["selection"]["valid_mase"], rel=1e-9)
    from kronkers_ml.demand.backtest import fold_mase              # the served model's own test MASE, which the gate reproduces
    assert metrics["model"]["own_mase"] == pytest.approx(fold_mase(bt, daily, [chosen])[chosen].mean(), rel=1e-9)


def test_interval_coverage_is_computed_from_the_backtest_residuals(built, metrics):
    from kronkers_ml.demand.backtest import conformal_quantiles, log_residuals
    valid = pd.read_parquet(product_at(built, "demand.validation"))
    bt = pd.read_parquet(product_at(built, "demand.backtest"))
    first = bt[bt.origin == bt.origin.min()]      # the first test fold is calibrated on the validation folds alone
    q = conformal_quantiles(log_residuals(valid, first.model_name.iloc[0]), HORIZON)
    steps = (first.horizon.to_numpy() - 1) // q["bucket_days"]
    for lv in ("80", "95"):
        lo, hi = (np.array([-np.inf if q["bounds"][b][lv][k] is None else q["bounds"][b][lv][k] for b in steps]) for k in (0, 1))
        assert first[f"model_lo{lv}"].to_numpy() == pytest.approx(first.model.to_numpy() * np.exp(lo))
        assert first[f"model_hi{lv}"].to_numpy() == pytest.approx(first.model.to_numpy() * np.exp(hi))
    open_days = bt[bt.model > 0]
    inside = (open_days.actual >= open_days.model_lo80) & (open_days.actual <= open_days.model_hi80)
    assert metrics["model"]["coverage_80"] == pytest.approx(inside.mean())
    closed = bt[bt.model == 0]
    assert (closed.model_lo95 == 0).all() and (closed.model_hi95 == 0).all()


def test_closed_days_are_forecast_as_zero(built, metrics):
    bt = pd.read_parquet(product_at(built, "demand.backtest"))
    if metrics["data"]["closes_on_holidays"]:
        hol = bt[(bt.is_holiday == 1) & (bt.closed_kind == "holiday")]
        assert len(hol) > 0 and (hol.model == 0).all()
    fc = pd.read_parquet(product_at(built, "demand.forecast"))
    assert not fc.date.dt.dayofweek.isin(metrics["data"]["closed_weekdays"]).any() or \
        (fc[fc.date.dt.dayofweek.isin(metrics["data"]["closed_weekdays"])].forecast == 0).all()


def test_the_registered_pyfunc_serves_the_chosen_model(built, metrics):
    import mlflow
    from kronkers_ml.demand.family import demand_serve
    from kronkers_ml.platform.registry import champion_version, load_version
    from kronkers_ml.platform.tracking import tracking_uri
    uri = tracking_uri(built, {})
    try:
        served, info = demand_serve(load_version(uri, "demand", champion_version(uri, "demand")))
    finally:
        mlflow.set_tracking_uri(None)
    assert info["model"] == metrics["model"]["name"] and info["params"] == metrics["model"]["params"]
    fc = served.forecast(10)
    expect = pd.read_parquet(product_at(built, "demand.forecast")).head(10)
    for col in ("forecast", "lo80", "hi80", "lo95", "hi95"):
        assert np.allclose(fc[col], expect[col], rtol=1e-9), col


def test_daily_series_keeps_the_revenue_of_the_clean_lines(built):
    lines = pd.read_parquet(product_at(built, "demand.transactions"))
    daily = pd.read_parquet(product_at(built, "demand.daily"))
    cells = pd.read_parquet(product_at(built, "demand.region_daily"))
    assert daily.revenue.sum() == pytest.approx(lines.revenue.sum()) == pytest.approx(cells.revenue.sum())
    assert daily.date.diff().dropna().eq(pd.Timedelta(days=1)).all(), "one row per calendar day, no gaps"
    closed = daily[daily.is_holiday == 1]
    assert len(closed) > 0 and (closed.revenue == 0).all(), "public holidays are closed days with explicit zeros"


def test_forecast_has_dates_bounds_and_a_model_version(built, metrics):
    fc = pd.read_parquet(product_at(built, "demand.forecast"))
    assert list(fc.columns) == ["date", "forecast", "lo80", "hi80", "lo95", "hi95", "model_version"]
    assert len(fc) == HORIZON
    assert fc.date.min() == pd.Timestamp(metrics["data"]["last_day"]) + pd.Timedelta(days=1)
    assert (fc.lo95 <= fc.lo80).all() and (fc.lo80 <= fc.forecast).all() and (fc.forecast <= fc.hi80).all() and (fc.hi80 <= fc.hi95).all()
    assert (fc.lo95 >= 0).all() and fc.forecast.gt(0).sum() >= HORIZON - 3
    assert fc.model_version.nunique() == 1
    assert fc.model_version[0].startswith(metrics["model"]["name"])
    assert metrics["data"]["sha256"][:12] in fc.model_version[0]


# --- the candidates on small series ---------------------------------------------------------------------------------
CANDIDATE_PARAMS = {"weekday_profile": {}, "ets": {}, "theta": {}, "sarima": {"max_p": 1, "max_q": 0, "max_P": 0, "max_Q": 1},
                    "lightgbm": {"seed": 3, "horizon": 14}}
WEEK = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.0])


def shop(days: int = 280, closed_sunday: bool = True, seed: int = 0) -> pd.DataFrame:
    "A shop with a weekly pattern and noise from 2024-02-05, closed on Sundays; the holiday calendar of the project."
    from kronkers_ml.demand.calendar import calendar_features
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"date": pd.date_range("2024-02-05", periods=days)})
    d = d.join(calendar_features(d.date).reset_index(drop=True))
    d["revenue"] = np.exp(9 + WEEK[d.date.dt.dayofweek] + rng.normal(0, 0.05, days))
    if closed_sunday:
        d.loc[d.date.dt.dayofweek == 6, "revenue"] = 0.0
    d.loc[d.is_holiday == 1, "revenue"] = 0.0
    return d


def future_of(daily: pd.DataFrame, days: int = 14) -> pd.DataFrame:
    from kronkers_ml.demand.calendar import calendar_features
    dates = pd.date_range(daily.date.max() + pd.Timedelta(days=1), periods=days)
    return calendar_features(dates).rename_axis("date").reset_index()


@pytest.mark.parametrize("name", list(CANDIDATE_PARAMS))
def test_closed_weekdays_are_forecast_as_zero_and_open_days_are_not(name):
    from kronkers_ml.demand.models import forecast_candidate, with_closures
    daily = shop()
    assert with_closures(daily).closed_kind[daily.date.dt.dayofweek == 6].eq("weekday").all()
    fut = future_of(daily)
    fc = forecast_candidate(name, daily, fut, CANDIDATE_PARAMS[name])
    sunday = fut.date.dt.dayofweek.to_numpy() == 6
    assert (fc[sunday] == 0).all() and (fc[~sunday] > 0).all()
    truth = np.exp(9 + WEEK[fut.date.dt.dayofweek[~sunday]])
    assert np.abs(fc[~sunday] / truth - 1).max() < 0.15, name


@pytest.mark.parametrize("name", list(CANDIDATE_PARAMS))
def test_an_unplanned_closure_does_not_pull_the_forecast_down(name):
    from kronkers_ml.demand.models import forecast_candidate, with_closures
    daily = shop()
    shut = daily.copy()
    last_days = shut.index[(shut.date > shut.date.max() - pd.Timedelta(days=7)) & (shut.date.dt.dayofweek.isin([1, 2, 3]))]
    shut.loc[last_days, "revenue"] = 0.0                    # a three-day stock-take in the last week before the origin
    assert (with_closures(shut).loc[last_days, "closed_kind"] == "unplanned").all()
    fut = future_of(daily)
    open_days = fut.date.dt.dayofweek.to_numpy() != 6
    base = forecast_candidate(name, daily, fut, CANDIDATE_PARAMS[name])[open_days]
    after = forecast_candidate(name, shut, fut, CANDIDATE_PARAMS[name])[open_days]
    assert np.abs(after / base - 1).max() < 0.1, (name, after / base)
    # the seasonal naive baseline, which repeats the zeros, shows what the closure would do to a model that took it as sales
    naive = forecast_candidate("seasonal_naive", shut, fut)
    assert (naive[fut.date.dt.dayofweek.isin([1, 2, 3]).to_numpy()] == 0).all()


def test_the_choice_does_not_change_when_the_test_folds_change():
    from kronkers_ml.demand.backtest import choose_model, rolling_origins, run_backtest, validation_origins
    daily = shop(days=210)
    test = rolling_origins(daily.date.max(), 2, 14, 14)
    valid = validation_origins(test[0], 2, 14, 14)
    cands = {"seasonal_naive": {}, "weekday_profile": {}}
    fc, _ = run_backtest(daily, valid + test, 14, cands, n_jobs=1)
    chosen, _ = choose_model(fc[fc.origin.isin(valid)], daily, list(cands))
    upset = daily.copy()
    upset.loc[upset.date > test[0], "revenue"] *= 3.0       # the test folds' days only
    fc2, _ = run_backtest(upset, valid + test, 14, cands, n_jobs=1)
    assert choose_model(fc2[fc2.origin.isin(valid)], upset, list(cands))[0] == chosen
    assert not np.allclose(fc2[fc2.origin.isin(test)].actual, fc[fc.origin.isin(test)].actual)
