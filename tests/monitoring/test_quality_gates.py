"""Quality gates stop bad data, not foreign data: a log or delivery tables from another business pass the gate (their
business constraints have no reference yet), bad values stop it with the dataset, column, rule and example rows, and
once a champion exists its data is the reference."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, ploomber_build, product_at
from kronkers_ml.demand.generator import REGIONS, simulate_transactions
from kronkers_ml.monitoring.quality import (QualityError, business_reference, check_frame, enforce_quality, load_constraints,
                                 save_accepted)
from kronkers_ml.monitoring.profiles import profile_frame
from kronkers_ml.service_time.generator import TINY_SIZE, simulate_service_data

QUALITY = ROOT / "config" / "quality.yaml"
STORES = ["Toronto 014", "Ottawa 202", "Montreal 031", "Calgary 117", "Halifax 009", "Winnipeg 150"]


@pytest.fixture(scope="module")
def foreign_log() -> pd.DataFrame:
    "Generated lines of another business: its own stores as regions, and some wholesale quantities up to 80,995."
    log = simulate_transactions(start="2023-01-01", days=500, invoices_per_day=25, n_products=60, n_customers=800,
                                faults=False, seed=11).drop(columns="category").drop_duplicates().reset_index(drop=True)
    rng = np.random.default_rng(5)
    log["region"] = np.array(STORES)[rng.integers(0, len(STORES), len(log))]
    big = rng.choice(len(log), 12, replace=False)
    log.loc[big, "quantity"] = rng.integers(1_000, 80_995, len(big))
    log.loc[big[0], "quantity"] = 80_995
    return log


def gate_report(out) -> dict:
    return json.loads(product_at(out, "monitoring.quality.demand").read_text())


def test_a_foreign_log_passes_the_gate_with_its_business_checks_waiting_for_a_reference(tmp_path, foreign_log):
    path = tmp_path / "other_shop.csv"
    foreign_log.to_csv(path, index=False)
    out = tmp_path / "out"
    ploomber_build(out, "--env--demand--transactions", str(path), "--partially", "check-demand-data")
    lines = pd.read_parquet(product_at(out, "demand.transactions"))
    assert lines.quantity.max() == 80_995 and not set(lines.region) & set(REGIONS)     # what the old constants refused
    report = gate_report(out)
    assert report["passed"] and report["reference"].startswith("no reference yet"), report["reference"]
    business = {(r["constraint"], r["column"]): r["status"] for r in report["results"] if r["scope"] == "business"}
    assert business == {("rows", None): "no reference yet", ("ranges", "quantity"): "no reference yet",
                        ("ranges", "unit_price"): "no reference yet", ("ranges", "revenue"): "no reference yet",
                        ("categories", "region"): "no reference yet"}, business
    assert all(r["status"] == "passed" for r in report["results"] if r["scope"] == "contract")
    accepted = list(product_at(out, "profiles.demand.accepted").glob("*/accepted.json"))
    assert len(accepted) == 1 and json.loads(accepted[0].read_text())["rows"]["transactions"] == len(lines)


def test_blank_ids_stop_the_gate_with_the_rows_that_have_them(tmp_path, foreign_log):
    path = tmp_path / "other_shop.csv"
    foreign_log.assign(invoice_id=foreign_log.invoice_id.where(~foreign_log.index.isin([7, 8, 300]), "  ")).to_csv(path, index=False)
    out = tmp_path / "out"
    done = ploomber_build(out, "--env--demand--transactions", str(path), "--partially", "check-demand-data", check=False)
    text = done.stdout + done.stderr
    assert done.returncode != 0 and "check-demand-data" in text and "QualityError" in text
    assert "transactions: max_null_fraction of column 'invoice_id': expected 0.0, observed " in text, text[-3000:]
    assert "3 row(s) break it, e.g. row " in text and "(invoice_id='')" in text
    failed = [r for r in gate_report(out)["results"] if not r["passed"]]
    assert [(r["constraint"], r["column"], r["rows_failing"]) for r in failed] == [("max_null_fraction", "invoice_id", 3)]
    lines = pd.read_parquet(product_at(out, "demand.transactions"))
    assert [e["row"] for e in failed[0]["examples"]] == np.flatnonzero(lines.invoice_id.eq("")).tolist()
    assert not list((out / "profiles" / "demand").glob("accepted/*"))      # bad data is never a reference


def test_empty_ids_stop_the_build_at_the_ingest_naming_the_column(tmp_path, foreign_log):
    path = tmp_path / "other_shop.csv"
    foreign_log.assign(product_id=foreign_log.product_id.where(foreign_log.index >= 2, None)).to_csv(path, index=False)
    done = ploomber_build(tmp_path / "out", "--env--demand--transactions", str(path), "--partially", "check-demand-data",
                          check=False)
    text = done.stdout + done.stderr
    assert done.returncode != 0 and "DataContractError" in text and "column 'product_id': 2 of" in text, text[-3000:]


def test_negative_quantities_that_reach_the_gate_stop_it_with_example_rows(tmp_path, foreign_log):
    # In a log, negative quantities are returns and the cleaning drops them (nbs/demand/03_data.ipynb); lines that
    # reach the gate negative anyway (a changed ingest, a hand-edited file) must stop it.
    path = tmp_path / "other_shop.csv"
    foreign_log.to_csv(path, index=False)
    out = tmp_path / "out"
    ploomber_build(out, "--env--demand--transactions", str(path), "--partially", "get-demand-data")
    product = product_at(out, "demand.transactions")
    lines = pd.read_parquet(product)
    lines.loc[[5, 40], "quantity"] = [-3, -1]
    lines["revenue"] = lines.quantity * lines.unit_price
    lines.to_parquet(product, index=False)
    done = ploomber_build(out, "--env--demand--transactions", str(path), "--partially", "check-demand-data", check=False)
    text = done.stdout + done.stderr
    assert done.returncode != 0 and "QualityError" in text
    assert "transactions: ranges of column 'quantity': expected [0, None], observed [-3" in text, text[-3000:]
    assert "2 row(s) break it, e.g. row 5 (quantity=-3), row 40 (quantity=-1)" in text
    failed = {(r["constraint"], r["column"]) for r in gate_report(out)["results"] if not r["passed"]}
    assert failed == {("ranges", "quantity"), ("ranges", "revenue")}, failed


# --- service time ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    "Tiny delivery tables in the real-data layout, around Oslo."
    t = simulate_service_data(**TINY_SIZE, seed=3, progress=False)
    return {k: t[k] for k in ("customers", "stops", "pings")}


def abroad(tables: dict, n_customers: int = 40) -> dict:
    "The same deliveries 2,100 km south-west (Madrid), for a smaller business: 40 customers and their stops."
    moved = {"customers": tables["customers"].head(n_customers).assign(lat=lambda c: c.lat - 19.5, lon=lambda c: c.lon - 14.45),
             "pings": tables["pings"].assign(lat=lambda p: p.lat - 19.5, lon=lambda p: p.lon - 14.45)}
    moved["stops"] = tables["stops"][tables["stops"].customer_id.isin(moved["customers"].customer_id)]
    return moved


def write(folder, tables):
    folder.mkdir(parents=True)
    for name, t in tables.items(): t.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def test_customers_in_another_country_pass_the_gate(tmp_path, tables):
    moved = abroad(tables)
    assert len(moved["customers"]) < 50 and len(moved["stops"]) < 500          # the old row minimums
    out = tmp_path / "out"
    ploomber_build(out, "--env--service_time--data_dir", str(write(tmp_path / "madrid", moved)), "--partially", "check-service-data")
    report = json.loads(product_at(out, "monitoring.quality.service_time").read_text())
    assert report["passed"] and report["rows"]["customers"] == 40
    statuses = {r["status"] for r in report["results"] if r["scope"] == "business"}
    assert statuses == {"no reference yet"}, statuses


def test_latitude_200_stops_the_build_naming_file_column_and_rows(tmp_path, tables):
    bad = {**tables, "customers": tables["customers"].assign(lat=lambda c: c.lat.where(c.index != 17, 200.0))}
    done = ploomber_build(tmp_path / "out", "--env--service_time--data_dir", str(write(tmp_path / "data", bad)),
                          "--partially", "check-service-data", check=False)
    text = done.stdout + done.stderr
    assert done.returncode != 0 and "customers.parquet" in text and "column 'lat': 1 of" in text and "out of range" in text
    # the gate's own contract says the same of any data that reaches it, with the row
    spec = load_constraints(QUALITY, "service_time")["customers"]
    with pytest.raises(QualityError, match=r"customers: ranges of column 'lat': expected \[-90, 90\], observed .*"
                                           r"1 row\(s\) break it, e.g. row 17 \(lat=200.0\)"):
        enforce_quality(check_frame(bad["customers"], spec, "customers"), "service_time")


def test_the_champions_data_is_the_reference_of_the_business_checks(tmp_path, tables, monkeypatch):
    "A real MLflow store: the champion's training run follows the Oslo data's acceptance; the Madrid data came later."
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow
    from kronkers_ml.platform.registry import register_version, set_champion
    from kronkers_ml.platform.tracking import tracking_uri, use_store
    spec = load_constraints(QUALITY, "service_time")
    out = tmp_path / "out"
    oslo = {k: v for k, v in tables.items()}
    views = {k: profile_frame(v) for k, v in oslo.items()}
    save_accepted(out, "service_time", views, {k: len(v) for k, v in oslo.items()}, {k: f"oslo-{k}" for k in oslo},
                  "real data from oslo/", generated=False)
    assert business_reference(out, "service_time", spec, generated=False)[0] == {}     # no champion yet
    uri = tracking_uri(out)
    use_store(uri, "service-time", str(out / "mlflow" / "artifacts"))
    with mlflow.start_run() as run:
        mlflow.log_param("seed", 7)
    set_champion(uri, "service-time", register_version(uri, "service-time", f"runs:/{run.info.run_id}/model", run.info.run_id),
                 "test", "trained on the Oslo data")
    moved = abroad(tables, n_customers=len(tables["customers"]))
    save_accepted(out, "service_time", {k: profile_frame(v) for k, v in moved.items()}, {k: len(v) for k, v in moved.items()},
                  {k: f"madrid-{k}" for k in moved}, "real data from madrid/", generated=False)   # accepted after the run
    facts, why = business_reference(out, "service_time", spec, generated=False)
    assert "champion service-time v1" in why and "oslo/" in why and "madrid" not in why, why
    assert facts["customers"]["rows"] == len(tables["customers"]) and 59 < facts["customers"]["ranges"]["lat"][0] < 60
    same = check_frame(tables["customers"], spec["customers"], "customers", facts["customers"])
    assert all(r["passed"] for r in same) and {r["status"] for r in same if r["scope"] == "business"} == {"passed"}
    shifted = check_frame(moved["customers"], spec["customers"], "customers", facts["customers"], examples=3)
    failed = {(r["constraint"], r["column"]): r for r in shifted if not r["passed"]}
    assert set(failed) == {("ranges", "lat"), ("ranges", "lon")}, set(failed)
    assert failed[("ranges", "lat")]["rows_failing"] == len(moved["customers"]) and [e["row"] for e in failed[("ranges", "lat")]["examples"]] == [0, 1, 2]
    with pytest.raises(QualityError, match=r"customers: ranges of column 'lat': expected 99.9% of rows within \[59"):
        enforce_quality(shifted, "service_time")
    few = check_frame(tables["customers"].head(10), spec["customers"], "customers", facts["customers"])
    assert [r["constraint"] for r in few if not r["passed"]] == ["rows"]           # a truncated export of that business
    assert business_reference(out, "service_time", spec, generated=True)[1].startswith("the generator's settings")
