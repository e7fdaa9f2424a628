"""A real transaction log drops in through env (demand.transactions): dirty lines are handled by the documented
rules, and a file that does not fit the schema stops the build with a clear error and no products."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ploomber_build, product_at
from kronkers_ml.demand.generator import simulate_transactions

DEMAND = "forecast-demand"


@pytest.fixture(scope="module")
def dirty_log() -> pd.DataFrame:
    """A log in the documented schema with every fault of a real export, written the way a shop system would:
    UTC timestamps with an offset, an extra description column, string ids."""
    log = simulate_transactions(start="2023-01-01", days=500, invoices_per_day=25, n_products=60, n_customers=800,
                                faults=False, seed=11).drop(columns="category")
    log = log.drop_duplicates().reset_index(drop=True)   # the same product twice in one basket would count as a duplicate
    rng = np.random.default_rng(0)
    invoices = log.invoice_id.unique()
    cancelled = rng.choice(invoices, 40, replace=False)
    cancel = log[log.invoice_id.isin(cancelled)].assign(invoice_id=lambda d: "C" + d.invoice_id, quantity=lambda d: -d.quantity)
    returns = log.sample(30, random_state=1).assign(quantity=lambda d: -d.quantity, invoice_id="R1")
    free = log.sample(10, random_state=2).assign(unit_price=0.0, invoice_id="F1")
    log.loc[log.sample(200, random_state=3).index, "customer_id"] = None
    dup = log[~log.invoice_id.isin(cancelled)].sample(25, random_state=4)
    out = pd.concat([log, cancel, returns, free, dup], ignore_index=True)
    stamp = out.timestamp.dt.tz_localize("Europe/Oslo", ambiguous="NaT", nonexistent="NaT")
    out = out[stamp.notna()].assign(timestamp=stamp.dropna().dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%z"))
    out.insert(3, "description", "item")
    out.attrs["expected"] = {"duplicated_line": 25, "cancellation": len(cancel), "return": 30, "no_positive_price": 10,
                             "cancelled_invoice": int(log.invoice_id.isin(cancelled).sum())}
    return out


def test_a_dirty_real_log_is_cleaned_as_documented_and_forecast(tmp_path, dirty_log):
    path = tmp_path / "sales_export.csv"
    dirty_log.to_csv(path, index=False)
    out = tmp_path / "out"
    ploomber_build(out, "--env--demand--transactions", str(path), "--partially", DEMAND)
    summary = json.loads(product_at(out, "demand.transactions_summary").read_text())
    assert summary["source"] == f"transaction log {path}" and summary["rows_raw"] == len(dirty_log)
    report = {r["rule"]: r for r in summary["cleaning"]}
    for rule, n in dirty_log.attrs["expected"].items():
        assert report[rule]["rows"] == n, (rule, report[rule])
    lines = pd.read_parquet(product_at(out, "demand.transactions"))
    assert summary["rows_clean"] == len(lines) == len(dirty_log) - sum(dirty_log.attrs["expected"].values())
    assert (lines.quantity > 0).all() and (lines.unit_price > 0).all()
    assert not lines.invoice_id.str.startswith("C").any() and not lines.duplicated().any()
    assert report["missing_customer_id"]["rows"] == lines.customer_id.isna().sum() > 0   # guests are kept
    # time zones: the export is in UTC; the shop's hours (07-23 Oslo time) come back once converted to Oslo time
    local = pd.to_datetime(dirty_log.timestamp, utc=True).dt.tz_convert("Europe/Oslo").dt.tz_localize(None)
    assert set(lines.timestamp) <= set(local)
    assert lines.timestamp.dt.hour.min() == 7 and (lines.date == lines.timestamp.dt.normalize()).all()
    daily = pd.read_parquet(product_at(out, "demand.daily"))
    assert daily.revenue.sum() == pytest.approx(lines.revenue.sum())
    assert (daily.loc[daily.is_holiday == 1, "revenue"] == 0).all()
    metrics = json.loads(product_at(out, "demand.metrics").read_text())
    assert metrics["data"]["transaction_lines_raw"] == len(dirty_log)
    assert len(pd.read_parquet(product_at(out, "demand.forecast"))) == 14


@pytest.mark.parametrize("column", ["unit_price", "timestamp", "region"])
def test_a_log_missing_a_column_stops_with_a_clear_error_and_no_products(tmp_path, dirty_log, column):
    path = tmp_path / "sales_export.parquet"
    dirty_log.drop(columns=column).to_parquet(path)
    out = tmp_path / "out"
    done = ploomber_build(out, "--env--demand--transactions", str(path), "--partially", DEMAND, check=False)
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "DataContractError" in log and f"sales_export.parquet: missing column(s) {column}" in log, log[-3000:]
    assert not (out / "demand").exists() or not any((out / "demand").iterdir())


def test_a_log_with_unreadable_quantities_names_the_column(tmp_path, dirty_log):
    path = tmp_path / "sales_export.csv"
    dirty_log.assign(quantity=dirty_log.quantity.astype(str).where(dirty_log.index >= 3, "three")).to_csv(path, index=False)
    done = ploomber_build(tmp_path / "out", "--env--demand--transactions", str(path), "--partially", DEMAND, check=False)
    assert done.returncode != 0
    assert "column 'quantity': 3 of" in done.stdout + done.stderr


def test_generated_hard_cases_with_matching_settings_find_the_shop_s_calendar(tmp_path):
    """A shop in Chicago, closed on Sundays and England's bank holidays, whose log is written in UTC: with country and
    timezone set to match, the days are the shop's own and every closed day has a planned reason."""
    out = tmp_path / "out"
    ploomber_build(out, "--env--demand--sim_closed_weekdays", "sun", "--env--demand--sim_clock", "utc",
                   "--env--demand--country", "GB-ENG", "--env--demand--timezone", "America/Chicago",
                   "--partially", "build-daily-revenue")
    lines = pd.read_parquet(product_at(out, "demand.transactions"))
    assert lines.timestamp.dt.hour.min() == 7 and lines.timestamp.dt.hour.max() == 22     # opening hours, local time
    meta = json.loads(product_at(out, "demand.daily_summary").read_text())
    assert (meta["country"], meta["timezone"], meta["closed_weekdays"]) == ("GB-ENG", "America/Chicago", [6])
    assert meta["closed_days"]["unplanned"] == 0 and meta["closed_days"]["holiday"] > 0
    daily = pd.read_parquet(product_at(out, "demand.daily")).set_index("date")
    assert (daily.closed_kind == "weekday").sum() == meta["closed_days"]["weekday"] == (daily.dow == 6).sum()
    assert not daily.loc["2023-05-17", "closed"] and daily.loc["2023-05-17", "is_holiday"] == 0   # open on 17 May
    assert daily.loc["2023-08-28", "closed_kind"] == "holiday"                                    # a Monday bank holiday


def test_the_same_log_read_with_oslo_settings_shows_why_the_settings_matter(tmp_path):
    """The log of the test above read with the defaults (Norway, Oslo time): evening sales move to the next day, so
    Sundays are no longer closed, England's holidays are unplanned closures and 17 May is a holiday the shop was open."""
    log = simulate_transactions(start="2023-01-01", days=500, invoices_per_day=25, n_products=60, n_customers=800,
                                seed=7, country="GB-ENG", closed_weekdays=(6,), clock="utc", timezone="America/Chicago")
    path = tmp_path / "chicago.csv"
    log.to_csv(path, index=False)
    out = tmp_path / "out"
    ploomber_build(out, "--env--demand--transactions", str(path), "--partially", "build-daily-revenue")
    meta = json.loads(product_at(out, "demand.daily_summary").read_text())
    assert (meta["country"], meta["timezone"], meta["closed_weekdays"]) == ("NO", "Europe/Oslo", [])
    assert meta["closed_days"]["unplanned"] > 0 and meta["holidays_open"] > 0
    daily = pd.read_parquet(product_at(out, "demand.daily")).set_index("date")
    assert not daily.loc["2023-05-17", "closed"] and daily.loc["2023-05-17", "is_holiday"] == 1


def test_an_unknown_country_or_time_zone_stops_the_build_naming_the_setting(tmp_path):
    done = ploomber_build(tmp_path / "out", "--env--demand--timezone", "Europe/Olso", "--partially", "get-demand-data",
                          check=False)
    assert done.returncode != 0 and "demand.timezone: unknown time zone 'Europe/Olso'" in done.stdout + done.stderr
    done = ploomber_build(tmp_path / "out2", "--env--demand--country", "XX", "--partially", "get-demand-data", check=False)
    assert done.returncode != 0 and "demand.country: no holiday calendar for 'XX'" in done.stdout + done.stderr
