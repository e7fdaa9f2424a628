"""The demand family on real public logs that install with a package (README, "Real transaction logs"): each log is
mapped to the documented schema by kronkers_ml.real_logs and built through the pipeline as a user's own log would be."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, ploomber_build
from kronkers_ml.real_logs import CDNOW_FILE, cdnow_log, package_file, write_real_log
from kronkers_ml.transactions import check_transactions, clean_transactions


def foreign_quality_config(tmp_path) -> str:
    """The project's gate settings without the generated business's list of regions (Oslo, Vestland, ...): a foreign
    log's regions are not bad data. The rest of the gate (contract, nulls, ranges, rows) stays as configured."""
    config = yaml.safe_load((ROOT / "config" / "quality.yaml").read_text())
    config.get("demand", {}).get("transactions", {}).pop("categories", None)
    path = tmp_path / "quality.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


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


@pytest.fixture(scope="module")
def cdnow_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cdnow")
    log = write_real_log("cdnow", tmp / "cdnow.csv")
    out = tmp / "out"
    ploomber_build(out, "--env--demand--transactions", str(log), "--env--demand--timezone", "UTC",
                   "--env--demand--country", "US", "--env--monitoring--quality", foreign_quality_config(tmp),
                   "--partially", "forecast-demand")
    return out, pd.read_csv(log, dtype={"customer_id": str, "invoice_id": str})


def test_the_demand_branch_builds_on_cdnow(cdnow_build):
    out, log = cdnow_build
    summary = json.loads((out / "demand" / "transactions.json").read_text())
    assert summary["rows_raw"] == len(log) and summary["timezone"] == "UTC"
    lines = pd.read_parquet(out / "demand" / "transactions.parquet")
    daily = pd.read_parquet(out / "demand" / "daily.parquet")
    days = pd.date_range(log.timestamp.min(), log.timestamp.max(), freq="D")
    assert daily.date.tolist() == list(days)                       # one row a day over the log's span, none lost
    assert daily.revenue.sum() == pytest.approx(lines.revenue.sum())
    assert (daily.closed == (daily.n_lines == 0)).all()
    assert set(daily.closed_kind) <= {"", "weekday", "holiday", "unplanned"}
    meta = json.loads((out / "demand" / "daily.json").read_text())
    assert (meta["country"], meta["timezone"]) == ("US", "UTC")
    assert meta["first_day"] == f"{days[0]:%Y-%m-%d}" and meta["last_day"] == f"{days[-1]:%Y-%m-%d}"
    assert sum(meta["closed_days"].values()) == int(daily.closed.sum())
    assert meta["closed_weekdays"] == []                            # an online shop sells every weekday
    # US holidays mark the calendar (4 July), not 17 May
    assert daily.set_index("date").loc[["1997-07-04", "1997-05-17"], "is_holiday"].tolist() == [1, 0]
    metrics = json.loads((out / "demand" / "metrics.json").read_text())
    backtest = pd.read_parquet(out / "demand" / "backtest.parquet")
    assert len(backtest) > 0 and backtest.date.max() == days[-1] and np.isfinite(backtest.actual).all()
    mase = metrics["model"]["mase"]
    assert np.isfinite(mase) and mase > 0
    forecast = pd.read_parquet(out / "demand" / "forecast.parquet")
    first = pd.Timestamp(forecast.date.min())
    assert first == days[-1] + pd.Timedelta(days=1) and len(forecast) > 0
    assert np.isfinite(forecast.select_dtypes("number").to_numpy()).all()
