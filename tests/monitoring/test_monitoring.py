"""Monitoring on the tiny pipeline: the data-quality gate, drift on the scenario and not on fresh data, alerts to a
real HTTP endpoint, and the retrain trigger rebuilding only the affected family."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, ploomber_build, ploomber_env, product_at
from kronkers_ml.monitoring.drift import drift_scores, flag_drift
from kronkers_ml.monitoring.monitor import check_performance, monitor
from kronkers_ml.monitoring.profiles import latest_profile, profile_frame, read_profile
from kronkers_ml.monitoring.quality import check_frame, check_profile, load_constraints
from kronkers_ml.service_time.features import location_features
from kronkers_ml.service_time.generator import apply_scenario, simulate_customer_latents, simulate_routes

SEED = 7        # env.test.yaml
N_DRIVERS = 3
WATCHED = yaml.safe_load((ROOT / "config" / "monitoring.yaml").read_text())["service_time"]["drift"]["columns"]
P_VALUE = float(yaml.safe_load((ROOT / "env.test.yaml").read_text())["monitoring"]["drift_p_value"])


def test_gate_and_profiles_are_in_the_build(built):
    report = json.loads(product_at(built, "monitoring.quality.service_time").read_text())
    assert report["passed"] and report["n_failed"] == 0 and report["n_constraints"] > 40
    for dataset in ("customers", "stops", "pings", "truth", "features", "features_train"):
        assert latest_profile(built, "service_time", dataset) is not None, dataset
    index = json.loads(product_at(built, "profiles.service_time.index").read_text())
    assert index["reference"]["rows"] > index["current"]["rows"] > 0 and index["profile_s"] > 0
    scores = flag_drift(drift_scores(read_profile(index["current"]["profile"]), read_profile(index["reference"]["profile"]), WATCHED),
                        p_value=P_VALUE)
    assert not scores.drifted.any(), "the undrifted build must not drift on the watched columns"


# --- data-quality gate --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw(built) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(product_at(built, f"service_time.raw.{n}")) for n in ("customers", "stops")}


BAD = {  # each kind of bad data, and the contract constraint that must catch it (fewer rows are foreign, not bad:
         # a business row minimum comes from a reference, tests/monitoring/test_quality_gates.py)
    "columns": lambda c: c.drop(columns="floor"),
    "types": lambda c: c.assign(customer_id=c.customer_id + 0.5),
    "max_null_fraction": lambda c: c.assign(lat=c.lat.where(c.index % 10 != 0)),
    "ranges": lambda c: c.assign(parking_difficulty=np.where(c.index == 3, 7, c.parking_difficulty)),
    "categories": lambda c: c.assign(zone=np.where(c.index == 5, "offshore", c.zone)),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_each_kind_of_bad_data_fails_its_constraint(raw, kind):
    spec = load_constraints(ROOT / "config" / "quality.yaml", "service_time")["customers"]
    good = check_profile(profile_frame(raw["customers"]), spec, "customers")
    assert all(r["passed"] for r in good)
    failed = [r for r in check_profile(profile_frame(BAD[kind](raw["customers"])), spec, "customers") if not r["passed"]]
    assert {r["constraint"] for r in failed} == {kind} or (kind == "columns" and "columns" in {r["constraint"] for r in failed}), failed


@pytest.mark.parametrize("kind", list(BAD))
def test_each_kind_of_bad_data_fails_its_constraint_on_every_row(raw, kind):
    spec = load_constraints(ROOT / "config" / "quality.yaml", "service_time")["customers"]
    assert all(r["passed"] for r in check_frame(raw["customers"], spec, "customers"))
    failed = {r["constraint"] for r in check_frame(BAD[kind](raw["customers"]), spec, "customers") if not r["passed"]}
    assert failed == {kind} or (kind == "columns" and "columns" in failed), failed


def test_one_bad_ping_among_millions_fails_the_gate(built):
    pings = pd.read_parquet(product_at(built, "service_time.raw.pings"))
    spec = load_constraints(ROOT / "config" / "quality.yaml", "service_time")["pings"]
    bad = pings.assign(lat=np.where(pings.index == len(pings) // 2, 95.0, pings.lat))
    failed = [(r["constraint"], r["column"]) for r in check_frame(bad, spec, "pings") if not r["passed"]]
    assert len(pings) > 1_000_000 and failed == [("ranges", "lat")]


def test_bad_data_stops_the_build_before_training_with_a_report(built, tmp_path):
    data = tmp_path / "data"; data.mkdir()
    customers = pd.read_parquet(product_at(built, "service_time.raw.customers"))
    customers.loc[customers.index[:3], "floor"] = 150          # possible (contract: up to 200); typical floors are business
    customers.to_parquet(data / "customers.parquet", index=False)
    pings = pd.read_parquet(product_at(built, "service_time.raw.pings"))
    pings.loc[pings.index % 5 == 0, ["lat", "lon"]] = np.nan   # the contract allows missing positions
    pings.to_parquet(data / "pings.parquet", index=False)
    shutil.copy(product_at(built, "service_time.raw.stops"), data / "stops.parquet")
    out = tmp_path / "out"
    # the service-time branch up to training only: the other families would build beside the failure for minutes
    done = ploomber_build(out, "--env--service_time--data_dir", str(data), "--partially", "train-service-time", check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "check-service-data" in text
    assert "pings: max_null_fraction of column 'lat': expected 0.05, observed 0.2" in text, text[-3000:]
    assert not product_at(out, "service_time.visits").exists() and not product_at(out, "service_time.model").exists()
    report = json.loads(product_at(out, "monitoring.quality.service_time").read_text())
    assert not report["passed"] and {(r["dataset"], r["column"]) for r in report["results"] if not r["passed"]} == {
        ("pings", "lat"), ("pings", "lon")}
    floor = [r for r in report["results"] if r["dataset"] == "customers" and r["column"] == "floor" and r["scope"] == "business"]
    assert [r["status"] for r in floor] == ["no reference yet"]      # a new source: its floors have no reference


def test_demand_gate_and_profiles_are_in_the_build(built):
    report = json.loads(product_at(built, "monitoring.quality.demand").read_text())
    assert report["passed"] and report["checked_on"] == "every row" and report["n_constraints"] >= 20
    assert {r["dataset"] for r in report["results"]} == {"transactions"}
    assert report["profiled_rows"]["transactions"] <= report["rows"]["transactions"]
    index = json.loads(product_at(built, "profiles.demand.index").read_text())
    assert index["reference"]["rows"] > index["current"]["rows"] > 0
    for dataset in ("transactions_history", "transactions"):
        assert latest_profile(built, "demand", dataset) is not None


def test_bad_demand_file_stops_the_build_at_the_gate_with_a_report(built, tmp_path):
    lines = pd.read_parquet(product_at(built, "demand.transactions")).drop(columns=["date", "revenue"])
    lines.loc[lines.index[:2], "product_id"] = "  "               # blank ids pass the ingest; the gate counts them missing
    log = tmp_path / "log.parquet"; lines.to_parquet(log, index=False)
    out = tmp_path / "out"
    done = ploomber_build(out, "--env--demand--transactions", str(log), "--partially", "build-daily-revenue", check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "check-demand-data" in text
    assert "transactions: max_null_fraction of column 'product_id': expected 0.0, observed " in text, text[-3000:]
    assert product_at(out, "demand.transactions").exists() and not product_at(out, "demand.daily").exists()
    report = json.loads(product_at(out, "monitoring.quality.demand").read_text())
    failed = {(r["constraint"], r["column"]) for r in report["results"] if not r["passed"]}
    assert not report["passed"] and failed == {("max_null_fraction", "product_id")}, failed


# --- drift --------------------------------------------------------------------------------------------------

FORTNIGHTS = 21     # fresh fortnights simulated after the built year


@pytest.fixture(scope="module")
def future_stops(built) -> pd.DataFrame:
    "Planned stops of the same customers and routes as the build, continued past its last day (2024-12-30)."
    customers = pd.read_parquet(product_at(built, "service_time.raw.customers"))
    latents = simulate_customer_latents(customers["customer_id"].to_numpy(), SEED)
    stops, _ = simulate_routes(customers, latents, N_DRIVERS, "2024-01-01", 365 + 14 * FORTNIGHTS, 10, SEED)
    built_stops = pd.read_parquet(product_at(built, "service_time.raw.stops"))
    assert stops[stops.date <= built_stops.date.max()].stop_id.max() == built_stops.stop_id.max()  # same year, then fresh days
    return stops[stops.date > built_stops.date.max()]


def scoring_batch(customers: pd.DataFrame, stops: pd.DataFrame, fortnight: int, scenario: str | None = None) -> pd.DataFrame:
    "The planned stops of one fresh fortnight with their customers' location features (optionally drifted)."
    first = stops.date.min() + pd.Timedelta(days=14 * fortnight)
    part = stops[(stops.date >= first) & (stops.date < first + pd.Timedelta(days=14))]
    return part.merge(location_features(apply_scenario(customers, scenario, SEED)), on="customer_id")


@pytest.fixture(scope="module")
def customers(built) -> pd.DataFrame:
    return pd.read_parquet(product_at(built, "service_time.raw.customers"))


@pytest.fixture(scope="module")
def reference(built):
    return read_profile(latest_profile(built, "service_time", "features_train"))


def test_drift_flags_the_scenario_and_stays_quiet_on_fresh_samples(customers, future_stops, reference):
    "False-alarm rate over 20 fresh undrifted fortnights: none; the scenario is flagged in every one."
    alarms, caught = [], []
    for fortnight in range(20):
        for scenario, hits in ((None, alarms), ("hard_parking", caught)):
            batch = scoring_batch(customers, future_stops, fortnight, scenario)
            scores = flag_drift(drift_scores(profile_frame(batch, WATCHED), reference, WATCHED), p_value=P_VALUE)
            hits.append(bool(scores.drifted.any()))
    assert sum(alarms) == 0, f"{sum(alarms)} false alarms in {len(alarms)} undrifted fortnights"
    assert all(caught), f"scenario missed in {caught.count(False)} of {len(caught)} fortnights"


def monitor_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kronkers-monitor"), "--env-file", "env.test.yaml", *args], cwd=ROOT,
                          env=env or ploomber_env(), capture_output=True, text=True, timeout=900)


def fresh_out(built: Path, tmp_path: Path) -> Path:
    "An out folder holding only the reference profile, predictions, training summary and out-of-fold errors of the build."
    out = tmp_path / "out"
    shutil.copytree(product_at(built, "profiles.service_time.features_train"), product_at(out, "profiles.service_time.features_train"))
    product_at(out, "service_time.predictions").parent.mkdir(parents=True)
    for key in ("service_time.predictions", "service_time.training", "service_time.out_of_fold"):
        shutil.copy(product_at(built, key), product_at(out, key))
    return out


def test_monitor_command_flags_the_scenario_only(built, customers, future_stops, tmp_path):
    out = fresh_out(built, tmp_path)
    quiet = tmp_path / "quiet.parquet"; scoring_batch(customers, future_stops, 0).to_parquet(quiet)
    done = monitor_cli("--out", str(out), "--family", "service_time", "--current", str(quiet), "--no-retrain")
    assert done.returncode == 0, done.stderr
    assert "service_time: drift ok; performance ok" in done.stdout
    assert not product_at(out, "monitoring.alerts").read_text().strip()
    drifted = tmp_path / "drifted.parquet"
    scoring_batch(customers, future_stops, 1, "hard_parking").to_parquet(drifted)
    done = monitor_cli("--out", str(out), "--family", "service_time", "--current", str(drifted), "--no-retrain")
    assert done.returncode == 0, done.stderr
    assert "drift BREACH parking_difficulty" in done.stdout
    alerts = [json.loads(line) for line in product_at(out, "monitoring.alerts").read_text().splitlines()]
    assert [(a["family"], a["kind"], a["name"]) for a in alerts] == [("service_time", "drift", "parking_difficulty")]
    assert alerts[0]["value"] < P_VALUE
    prom = product_at(out, "monitoring.gauges").read_text()
    assert 'kronkers_monitor_breach{family="service_time",kind="drift"} 1.0' in prom


def test_monitor_command_covers_both_families(built, tmp_path):
    out = fresh_out(built, tmp_path)
    shutil.copytree(product_at(built, "profiles.service_time.features"), product_at(out, "profiles.service_time.features"))
    shutil.copytree(built / "profiles" / "demand", out / "profiles" / "demand")
    done = monitor_cli("--out", str(out), "--no-retrain")
    assert done.returncode == 0, done.stderr
    assert "service_time: drift ok" in done.stdout and "demand: drift ok" in done.stdout, done.stdout
    prom = product_at(out, "monitoring.gauges").read_text()
    assert 'kronkers_monitor_breach{family="demand",kind="drift"} 0.0' in prom
    lines = pd.read_parquet(product_at(built, "demand.transactions"))
    newest = lines[lines.date > lines.date.max() - pd.Timedelta(days=14)]
    dearer = tmp_path / "dearer.parquet"; newest.assign(unit_price=newest.unit_price * 1.5).to_parquet(dearer)
    done = monitor_cli("--out", str(out), "--family", "demand", "--current", str(dearer), "--no-retrain")
    assert done.returncode == 0, done.stderr
    assert "demand: drift BREACH unit_price" in done.stdout, done.stdout


def test_performance_breach_when_the_error_grows(built, tmp_path):
    out = fresh_out(built, tmp_path)
    pred = pd.read_parquet(product_at(out, "service_time.predictions"))
    ok = monitor(ROOT / "env.test.yaml", ["service_time"], str(out), predictions=pred, retrain_on_breach=False)
    assert ok["families"]["service_time"]["performance"]["checked"] and not ok["families"]["service_time"]["performance"]["breach"]
    worse = pred.assign(lightgbm=pred.lightgbm + 300.0)
    bad = monitor(ROOT / "env.test.yaml", ["service_time"], str(out), predictions=worse, retrain_on_breach=False)
    perf = bad["families"]["service_time"]["performance"]
    assert perf["breach"] and "= training MAE" in perf["reason"] and "does not beat the baseline" in perf["reason"]
    # the tiny build's year holds no earlier December: judged against the validation MAE, and the alert says so
    assert "not adjusted for the season: no same weeks of an earlier year in" in perf["reason"]
    assert "service_time/out_of_fold.parquet" in perf["reason"]



def _demand_shift(backtest: pd.DataFrame, days: int, factor: float) -> pd.DataFrame:
    "The backtest's forecasts with the actual revenue of the newest `days` days multiplied by `factor` (a demand shift)."
    shifted = backtest["date"] > backtest["date"].max() - pd.Timedelta(days=days)
    return backtest.assign(actual=np.where(shifted, backtest["actual"] * factor, backtest["actual"]))


def test_demand_shift_is_flagged_quiet_data_is_not_and_only_demand_retrains(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out, symlinks=True)
    backtest = pd.read_parquet(product_at(out, "demand.backtest"))
    quiet = monitor(ROOT / "env.test.yaml", ["demand"], str(out), retrain_on_breach=False)["families"]["demand"]
    perf = quiet["performance"]
    assert perf["checked"] and perf["metric"] == "mase" and not perf["breach"], perf
    assert perf["window_days"] == 14 and perf["training_mase"] == pytest.approx(
        json.loads(product_at(out, "demand.metrics").read_text())["model"]["mase"])
    shifted = tmp_path / "actuals.parquet"; _demand_shift(backtest, 14, 1.5).to_parquet(shifted)
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "nb").glob("*.ipynb")}
    done = monitor_cli("--out", str(out), "--family", "demand", "--predictions", str(shifted))   # retraining on
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demand: drift ok; performance BREACH MASE" in done.stdout, done.stdout
    ran = {name for name, t in stamp.items() if (out / "nb" / name).stat().st_mtime_ns != t}
    assert ran == {"backtest-demand.ipynb", "forecast-demand.ipynb", "register-demand.ipynb"}, ran
    records = [json.loads(line) for line in product_at(out, "monitoring.alerts").read_text().splitlines()]
    alert = [r for r in records if r["family"] == "demand" and r["kind"] == "performance"][-1]
    assert alert["name"] == "mase" and alert["value"] > alert["threshold"] and alert["mae"] > 0
    assert [(r["family"], r["ok"]) for r in records if r["kind"] == "retrain"] == [("demand", True)]
    assert 'kronkers_model_window_mase{family="demand"}' in product_at(out, "monitoring.gauges").read_text()

# --- alerts to a real HTTP endpoint --------------------------------------------------------------------------

class Recorder(BaseHTTPRequestHandler):
    received: list = []

    def _record(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.received.append((self.command, self.path, self.headers.get("Content-Type"), body))
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")

    do_POST = do_PUT = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True); thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.received
    server.shutdown(); server.server_close()


def test_alerts_reach_the_webhook_and_the_pushgateway(built, customers, future_stops, tmp_path, endpoint):
    url, received = endpoint
    out = fresh_out(built, tmp_path)
    drifted = tmp_path / "drifted.parquet"; scoring_batch(customers, future_stops, 2, "hard_parking").to_parquet(drifted)
    env = dict(ploomber_env(), KRONKERS_ALERT_WEBHOOK=f"{url}/hooks/slack", KRONKERS_PUSHGATEWAY_URL=url)
    done = monitor_cli("--out", str(out), "--family", "service_time", "--current", str(drifted), "--no-retrain", env=env)
    assert done.returncode == 0, done.stderr
    assert "webhook: sent" in done.stdout
    posts = [r for r in received if r[0] == "POST"]
    assert len(posts) == 1 and posts[0][1] == "/hooks/slack" and posts[0][2] == "application/json"
    payload = json.loads(posts[0][3])
    assert "parking_difficulty" in payload["text"] and payload["text"].startswith("Kronkers monitor: 1 alert(s)")
    assert payload["alerts"][0]["kind"] == "drift"
    pushes = [r for r in received if r[0] == "PUT"]
    assert len(pushes) == 1 and pushes[0][1] == "/metrics/job/kronkers_monitor"
    assert b'kronkers_monitor_breach{family="service_time",kind="drift"} 1.0' in pushes[0][3]


# --- retrain trigger ----------------------------------------------------------------------------------------

def test_retrain_rebuilds_only_the_affected_family(built, customers, future_stops, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out, symlinks=True)
    # a second family, undrifted (its current batch is its reference), whose retraining would re-run the data task
    fam2 = out / "profiles" / "quiet_family"
    shutil.copytree(product_at(out, "profiles.service_time.features_train"), fam2 / "reference")
    shutil.copytree(product_at(out, "profiles.service_time.features_train"), fam2 / "current")
    config = yaml.safe_load((ROOT / "config" / "monitoring.yaml").read_text())
    config["quiet_family"] = {"drift": {"reference": "reference", "current": "current", "columns": WATCHED},
                              "retrain_tasks": ["get-service-data"]}
    (tmp_path / "monitoring.yaml").write_text(yaml.safe_dump(config))
    drifted = tmp_path / "drifted.parquet"; scoring_batch(customers, future_stops, 3, "hard_parking").to_parquet(drifted)
    cfg = str(tmp_path / "monitoring.yaml")
    logged = monitor_cli("--out", str(out), "--config", cfg, "--family", "service_time", "--current", str(drifted), "--no-retrain")
    assert logged.returncode == 0, logged.stderr
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "nb").glob("*.ipynb")}
    done = monitor_cli("--out", str(out), "--config", cfg)     # every family, retraining on
    assert done.returncode == 0, done.stdout + done.stderr
    assert "quiet_family: drift ok" in done.stdout and "service_time: drift BREACH parking_difficulty" in done.stdout
    assert "retrain train-service-time: ok" in done.stdout
    ran = {name for name, t in stamp.items() if (out / "nb" / name).stat().st_mtime_ns != t}
    assert ran == {"train-service-time.ipynb", "evaluate-service-time.ipynb", "register-service-time.ipynb"}
    records = [json.loads(line) for line in product_at(out, "monitoring.alerts").read_text().splitlines()]
    assert [(r["family"], r["ok"]) for r in records if r["kind"] == "retrain"] == [("service_time", True)]


# --- the seasonal normal (small data, no build) -----------------------------------------------------------------

def _stops(days: pd.DatetimeIndex, error, per_day: int = 40, seed: int = 0) -> pd.DataFrame:
    "`per_day` stops a day whose prediction misses the measured time by about `error(day)` seconds (either side)."
    rng = np.random.default_rng(seed)
    date = days.repeat(per_day)
    truth = rng.gamma(4.0, 75.0, len(date))
    miss = np.repeat(np.asarray([error(d) for d in days], dtype=float), per_day) * rng.choice([-1.0, 1.0], len(date))
    return pd.DataFrame({"date": date, "service_time_s": truth, "lightgbm": truth + miss, "business_rule_7min": 420.0})


def _christmas(d) -> bool:
    return (d.month == 12 and d.day >= 14) or (d.month == 1 and d.day <= 3)


@pytest.fixture
def seasonal_out(tmp_path) -> Path:
    "Two years of out-of-fold errors (100 s, 140 s in the Christmas weeks) and a training summary: validation Jul-Sep."
    out = tmp_path / "out"; (out / "service_time").mkdir(parents=True)
    history = pd.date_range("2023-01-01", "2024-09-30", freq="D")
    _stops(history, lambda d: 140.0 if _christmas(d) else 100.0, seed=1).to_parquet(product_at(out, "service_time.out_of_fold"))
    product_at(out, "service_time.training").write_text(json.dumps(
        {"best_valid_mae_s": 100.0, "split": {"valid": {"from": "2024-07-01", "to": "2024-09-30"}}}))
    return out


SERVICE_SPEC = yaml.safe_load((ROOT / "config" / "monitoring.yaml").read_text())["service_time"]["performance"]
THRESHOLDS = {"perf_window_days": 14, "perf_tolerance": 0.3, "perf_min_rows": 30, "perf_spread_z": 2.0}


def test_a_normal_christmas_peak_is_not_an_alert_and_a_real_degradation_is(seasonal_out):
    christmas = pd.date_range("2024-12-01", "2024-12-31", freq="D")
    peak = _stops(christmas, lambda d: 140.0 if _christmas(d) else 100.0, seed=2)     # as bad as every Christmas
    judged = check_performance(seasonal_out, SERVICE_SPEC, THRESHOLDS, peak)
    assert judged["checked"] and judged["mae"] > 100.0 * 1.3, judged     # above what the year-round figure allows ...
    assert not judged["breach"], judged["reason"]                        # ... and normal for these weeks
    assert judged["seasonal"]["found"] and judged["seasonal"]["years"] == [2023]
    assert judged["seasonal"]["factor"] == pytest.approx(1.4, rel=0.05)
    assert judged["reason"].startswith("within limits") and "same weeks of 2023" in judged["reason"]
    # the same figures judged against the year-round validation error alone (no seasonal block) alarm
    plain = {k: v for k, v in SERVICE_SPEC.items() if k != "seasonal"}
    assert check_performance(seasonal_out, plain, THRESHOLDS, peak)["breach"]
    # a real degradation in the same weeks: 1.5 x the normal Christmas error
    worse = _stops(christmas, lambda d: 210.0 if _christmas(d) else 100.0, seed=2)
    bad = check_performance(seasonal_out, SERVICE_SPEC, THRESHOLDS, worse)
    assert bad["breach"] and bad["mae"] > bad["limit"] > bad["expected"] > 100.0, bad
    assert f"x seasonal {bad['seasonal']['factor']:.2f}" in bad["reason"] and "same weeks of 2023" in bad["reason"], bad["reason"]
    assert "over the validation months" in bad["reason"], bad["reason"]
    # and outside the season the error may not rise by that share either
    autumn = pd.date_range("2024-10-01", "2024-10-31", freq="D")
    assert not check_performance(seasonal_out, SERVICE_SPEC, THRESHOLDS, _stops(autumn, lambda d: 100.0, seed=3))["breach"]
    late = check_performance(seasonal_out, SERVICE_SPEC, THRESHOLDS, _stops(autumn, lambda d: 140.0, seed=3))
    assert late["breach"] and late["seasonal"]["factor"] == pytest.approx(1.0, rel=0.05), late


def test_without_the_same_weeks_in_the_history_the_alert_says_so(seasonal_out):
    oof = pd.read_parquet(product_at(seasonal_out, "service_time.out_of_fold"))
    oof[oof.date >= "2024-01-01"].to_parquet(product_at(seasonal_out, "service_time.out_of_fold"))   # one year short
    worse = _stops(pd.date_range("2024-12-01", "2024-12-31", freq="D"), lambda d: 140.0, seed=2)
    res = check_performance(seasonal_out, SERVICE_SPEC, THRESHOLDS, worse)
    assert res["breach"] and not res["seasonal"]["found"] and res["expected"] == pytest.approx(100.0)
    assert "not adjusted for the season: no same weeks of an earlier year in" in res["reason"], res["reason"]
    assert "out_of_fold.parquet (2024-01-01 to 2024-09-30)" in res["reason"], res["reason"]


def _demand_out(tmp_path: Path, folds_from: str, model_christmas: float) -> tuple[Path, pd.DataFrame]:
    """Three years of daily revenue whose Christmas weeks swing 3 x more (so the seasonal naive errs 3 x more there), and
    backtest folds from `folds_from` whose forecast errs `model_christmas` x more in those weeks; metrics.json with its MASE."""
    out = tmp_path / "out"; (out / "demand").mkdir(parents=True)
    rng = np.random.default_rng(0)
    days = pd.date_range("2022-01-01", "2024-12-31", freq="D")
    swing = np.where([_christmas(d) for d in days], 3000.0, 1000.0)
    daily = pd.DataFrame({"date": days, "revenue": 20_000.0 + rng.normal(0, 1, len(days)) * swing})
    daily.to_parquet(product_at(out, "demand.daily"))
    folds = daily[daily.date >= folds_from].reset_index(drop=True)
    err = np.where([_christmas(d) for d in folds.date], model_christmas, 1.0) * 500.0 * np.abs(rng.normal(0, 1, len(folds)))
    backtest = folds.rename(columns={"revenue": "actual"}).assign(origin=pd.Timestamp(folds_from), model=folds.revenue + err,
                                                                   seasonal_naive=folds.revenue + 4 * err)
    backtest.to_parquet(product_at(out, "demand.backtest"))
    mae, scale = float(err.mean()), daily.revenue.diff(7).abs().mean()      # the backtest's MASE over every fold day
    product_at(out, "demand.metrics").write_text(json.dumps({"model": {"mae": mae, "mase": mae / scale}}))
    return out, backtest


DEMAND_SPEC = {**yaml.safe_load((ROOT / "config" / "monitoring.yaml").read_text())["demand"]["performance"], "prediction": "model"}


def _shift_newest(backtest: pd.DataFrame, factor: float) -> pd.DataFrame:
    newest = backtest.date > backtest.date.max() - pd.Timedelta(days=14)
    return backtest.assign(actual=np.where(newest, backtest.actual * factor, backtest.actual))


def test_demand_is_judged_against_the_seasonal_naive_of_the_same_weeks(tmp_path):
    "Folds of half a year: no earlier Christmas in the backtest, so the seasonal naive of the daily revenue says what is normal."
    out, backtest = _demand_out(tmp_path, "2024-06-01", 3.0)
    judged = check_performance(out, DEMAND_SPEC, THRESHOLDS, backtest)
    assert judged["checked"] and judged["metric"] == "mase" and judged["seasonal"]["found"], judged
    assert judged["mase"] > judged["training_mase"] * 1.5 and not judged["breach"], judged["reason"]
    assert judged["seasonal"]["years"] == [2022, 2023] and "seasonal naive" in judged["reason"], judged["reason"]
    bad = check_performance(out, DEMAND_SPEC, THRESHOLDS, _shift_newest(backtest, 1.5))
    assert bad["breach"] and "MASE" in bad["reason"] and "x seasonal" in bad["reason"], bad["reason"]


def test_demand_prefers_the_backtests_own_error_in_the_same_weeks(tmp_path):
    "Folds reaching back past the previous Christmas: the forecast's own error there (1.5 x) sets the normal, not the naive's (3 x)."
    out, backtest = _demand_out(tmp_path, "2023-06-01", 1.5)
    judged = check_performance(out, DEMAND_SPEC, THRESHOLDS, backtest)
    assert judged["seasonal"]["found"] and "the backtest's error in demand/backtest.parquet" in judged["reason"], judged["reason"]
    assert judged["seasonal"]["years"] == [2023] and 1.2 < judged["seasonal"]["factor"] < 1.8, judged["seasonal"]
    assert not judged["breach"], judged["reason"]
    # a Christmas twice as bad as the last one: normal by the naive's measure, an alert by the forecast's own
    worse = backtest.assign(model=np.where([_christmas(d) and d.year == 2024 for d in backtest.date],
                                           backtest.actual + 2 * (backtest.model - backtest.actual), backtest.model))
    bad = check_performance(out, DEMAND_SPEC, THRESHOLDS, worse)
    assert bad["breach"] and "the backtest's error" in bad["reason"], bad["reason"]
    naive_only = {**DEMAND_SPEC, "seasonal": DEMAND_SPEC["seasonal"][1:]}
    assert not check_performance(out, naive_only, THRESHOLDS, worse)["breach"]
