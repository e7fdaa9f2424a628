"""Real data drops in through env (service_time.data_dir); bad files stop the build with a clear error."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import ploomber_build, product_at
from kronkers_ml.service_time.generator import TINY_SIZE, simulate_service_data


@pytest.fixture(scope="module")
def real_tables() -> dict[str, pd.DataFrame]:
    "A small dataset in the real-data layout (no truth: real deliveries have none)."
    tables = simulate_service_data(**TINY_SIZE, seed=3, progress=False)
    return {k: tables[k] for k in ("customers", "stops", "pings")}


def write_folder(folder: Path, tables: dict[str, pd.DataFrame]) -> Path:
    "Write the tables the way a data supplier would: pings as CSV with UTC offsets, the rest as Parquet."
    folder.mkdir(parents=True, exist_ok=True)
    pings = tables["pings"].copy()
    if pd.api.types.is_datetime64_any_dtype(pings.timestamp):
        pings["timestamp"] = pings.timestamp.dt.tz_localize("Europe/Oslo", ambiguous="NaT", nonexistent="NaT")
        pings = pings.dropna(subset=["timestamp"])
        pings["timestamp"] = pings.timestamp.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    pings.to_csv(folder / "pings.csv", index=False)
    tables["customers"].to_parquet(folder / "customers.parquet")
    tables["stops"].to_parquet(folder / "stops.parquet")
    return folder


def test_real_data_is_used_instead_of_the_generator(tmp_path, real_tables):
    data = write_folder(tmp_path / "data", real_tables)
    out = tmp_path / "out"
    ploomber_build(out, "--env--service_time--data_dir", str(data), "--partially", "clean-geofences")
    stops = pd.read_parquet(product_at(out, "service_time.raw.stops"))
    assert len(stops) == len(real_tables["stops"])
    assert len(pd.read_parquet(product_at(out, "service_time.raw.truth"))) == 0
    visits = pd.read_parquet(product_at(out, "service_time.visits"))
    assert len(visits) > 0.9 * len(stops)


def _drop_lat(t):
    return {**t, "pings": t["pings"].drop(columns="lat")}


def _bad_timestamps(t):
    pings = t["pings"].copy()
    pings["timestamp"] = pings["timestamp"].astype(str)
    pings.loc[pings.index[:5], "timestamp"] = "not a time"
    return {**t, "pings": pings}


def _out_of_range(t):
    customers = t["customers"].copy()
    customers.loc[customers.index[:3], "lon"] = 200.0
    return {**t, "customers": customers}


def _missing_file(t):
    return {k: v for k, v in t.items() if k != "stops"}


@pytest.mark.parametrize("fault, expected", [
    (_drop_lat, ["pings.csv", "missing column(s) lat"]),
    (_bad_timestamps, ["pings.csv", "column 'timestamp'", "5 of", "not a valid datetime"]),
    (_out_of_range, ["customers.parquet", "column 'lon'", "3 of", "out of range"]),
    (_missing_file, ["no table 'stops'"]),
], ids=["missing-column", "unparseable-timestamp", "coordinates-out-of-range", "missing-table"])
def test_bad_input_stops_the_build_with_a_clear_error(tmp_path, real_tables, fault, expected):
    tables = fault(real_tables)
    data = tmp_path / "data"
    data.mkdir()
    for name, frame in tables.items():
        frame.to_csv(data / f"{name}.csv", index=False) if name == "pings" else frame.to_parquet(data / f"{name}.parquet")
    out = tmp_path / "out"
    # the service-time branch only: the other families' tasks would build beside the failure and prove nothing here
    done = ploomber_build(out, "--env--service_time--data_dir", str(data), "--partially", "clean-geofences", check=False)
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "DataContractError" in log
    for text in expected:
        assert text in log, f"{text!r} not in the error output:\n{log[-3000:]}"
    assert not product_at(out, "service_time.raw.pings").exists()
    assert not product_at(out, "service_time.visits").exists()
