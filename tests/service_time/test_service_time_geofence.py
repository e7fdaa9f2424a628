"""Geofencing that fits the data: sparse pings, visits across midnight, UTC clocks, and runs that say why they found nothing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, ploomber_build, product_at
from kronkers_ml.service_time.geofence import M_PER_DEG, detect_visits, geofence_accuracy
from kronkers_ml.service_time.data import load_service_data
from kronkers_ml.service_time.generator import TINY_SIZE, simulate_service_data, utc_clock
from kronkers_ml.service_time.settings import CleanGeofences


@pytest.fixture(scope="module")
def env_settings() -> dict:
    "The geofence settings of the default run, as env.yaml states them and the pipeline reads them (detect_visits' arguments)."
    return CleanGeofences.from_env(yaml.safe_load((ROOT / "env.yaml").read_text())).as_params()


def _visits(tables: dict, settings: dict) -> pd.DataFrame:
    return detect_visits(tables["pings"], tables["stops"], tables["customers"], progress=False, **settings)


@pytest.mark.parametrize("interval", [(5.0, None), (60.0, 120.0)], ids=["dense-5s", "sparse-60-120s"])
def test_visits_are_found_at_any_ping_rate_with_the_default_settings(env_settings, interval):
    tables = simulate_service_data(**{**TINY_SIZE, "ping_interval_s": interval[0]}, ping_interval_max_s=interval[1], seed=11,
                                   progress=False)
    visits = _visits(tables, env_settings)
    acc = geofence_accuracy(visits, tables["truth"], tables["stops"])
    assert acc["stop_recall"] >= 0.97 and acc["stop_precision"] >= 0.97, acc
    assert acc["service_time_mae_s"] < (25 if interval[1] is None else 75), acc
    assert visits.attrs["diagnostics"]["explanation"] == []
    derived = visits.attrs["diagnostics"]["thresholds_min_max"]
    assert derived["flap_gap_s"][0] >= 4 * interval[0]               # thresholds follow the ping interval


def test_sparse_pings_with_phone_thresholds_find_nothing_and_say_why(env_settings):
    tables = simulate_service_data(**{**TINY_SIZE, "ping_interval_s": 60.0}, ping_interval_max_s=120.0, seed=11, progress=False)
    fixed = {**env_settings, "flap_gap_s": 20, "max_gap_s": 180, "min_segment_pings": 3}
    visits = _visits(tables, fixed)
    assert len(visits) < 0.05 * len(tables["stops"])
    why = visits.attrs["diagnostics"]["explanation"]
    assert why and why[0].startswith(f"{len(visits)} of {len(tables['stops'])} stops found a visit: pings inside fences are ")
    assert "longer than the 20 s a dwell segment allows (service_time.flap_gap_s)" in why[0]


def _one_stop(planned: str, date: str):
    cust = pd.DataFrame({"customer_id": [1], "lat": [59.9], "lon": [10.75]})
    stops = pd.DataFrame({"stop_id": [7], "route_id": [1], "driver_id": [3], "customer_id": [1], "date": [pd.Timestamp(date)],
                          "seq": [1], "planned_arrival": [pd.Timestamp(planned)]})
    return cust, stops


def _stay(start: str, stay_s: float, dt: float, seed: int = 0) -> pd.DataFrame:
    "Pings of a van driving 2 km in, staying stay_s 10 m from the address, driving out; one ping every dt s."
    rng = np.random.default_rng(seed)
    kt = np.array([0.0, 240.0, 240.0 + stay_s, 480.0 + stay_s]); kx = np.array([-2000.0, -10.0, -10.0, 2000.0])
    t = np.arange(0, kt[-1], dt)
    x = np.interp(t, kt, kx) + rng.normal(0, 6, len(t)); y = rng.normal(0, 6, len(t))
    return pd.DataFrame({"driver_id": 3, "timestamp": pd.Timestamp(start) + pd.to_timedelta(t, unit="s"),
                         "lat": 59.9 + y / M_PER_DEG, "lon": 10.75 + x / (M_PER_DEG * np.cos(np.radians(59.9)))})


@pytest.mark.parametrize("dt", [5.0, 90.0])
def test_a_visit_across_midnight_is_one_visit(env_settings, dt):
    cust, stops = _one_stop("2024-12-31 23:56", "2024-12-31")
    pings = _stay("2024-12-31 23:52:00", 600, dt)                     # at the door 23:56-00:06
    visits = _visits({"pings": pings, "stops": stops, "customers": cust}, env_settings)
    assert len(visits) == 1
    assert visits.entry[0] < pd.Timestamp("2025-01-01") < visits.exit[0]
    assert visits.service_time_s[0] == pytest.approx(600, abs=dt + 20)


def test_a_utc_clocked_file_gives_the_same_visits_as_the_local_one(tmp_path, env_settings):
    local = simulate_service_data(**TINY_SIZE, seed=5, progress=False)
    utc = utc_clock(local, "Europe/Oslo")
    folder = tmp_path / "utc"; folder.mkdir()
    pings = utc["pings"].assign(timestamp=utc["pings"].timestamp.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    pings.to_csv(folder / "pings.csv", index=False)                   # text with a Z, as a tracker writes it
    utc["stops"].to_parquet(folder / "stops.parquet")                 # tz-aware UTC planned arrivals
    local["customers"].to_parquet(folder / "customers.parquet")
    read = load_service_data(folder, tz=env_settings["timezone"])
    assert read["pings"].timestamp.dt.tz is None
    ref = _visits(local, env_settings)
    got = _visits(read, env_settings)
    assert len(ref) > 0.9 * len(local["truth"])
    pd.testing.assert_frame_equal(got[["stop_id", "n_pings"]], ref[["stop_id", "n_pings"]])
    assert (got.entry - ref.entry).abs().max() <= pd.Timedelta("1ms")
    assert (got.service_time_s - ref.service_time_s).abs().max() <= 1e-3
    # read on the wrong clock (UTC), the plan and the visits disagree by whole hours, and the run says so
    wrong = _visits(load_service_data(folder, tz="UTC") | {"stops": local["stops"]}, {**env_settings, "timezone": "UTC"})
    assert any("1 h earlier than planned" in w and "service_time.timezone (now UTC)" in w
               for w in wrong.attrs["diagnostics"]["explanation"]), wrong.attrs["diagnostics"]["explanation"]


def test_the_pipeline_writes_the_explanation_into_geofence_json(tmp_path):
    out = tmp_path / "out"
    ploomber_build(out, "--env--service_time--ping_interval_s", "60", "--env--service_time--ping_interval_max_s", "120",
                   "--env--service_time--clock", "utc", "--env--service_time--flap_gap_s", "20",
                   "--env--service_time--min_segment_pings", "3", "--partially", "clean-geofences")
    geo = json.loads(product_at(out, "service_time.geofence").read_text())
    assert geo["explanation"] and "(service_time.flap_gap_s)" in geo["explanation"][0]
    assert geo["params"]["flap_gap_s"] == 20 and geo["params"]["timezone"] == "Europe/Oslo"
    summary = json.loads(product_at(out, "service_time.raw.summary").read_text())
    assert "UTC clock" in summary["source"] and summary["timezone"] == "Europe/Oslo"
    nb = (out / "nb" / "clean-geofences.ipynb").read_text()
    assert "WARNING:" in nb and "service_time.flap_gap_s" in nb
