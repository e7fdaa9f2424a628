"""Geofence throughput benchmark: clean_pings + detect_visits on ~1M and ~10M simulated pings.

For each size the script
  1. generates the data with kronkers_ml.service_time.generator (default-size world: 6000 customers, 9 drivers,
     11 stops per route; ~73 days give ~1M pings, 730 days ~10M) in a child process and writes the
     pings, stops, customers and truth to parquet in a temporary folder (not timed);
  2. starts a *fresh* child process that loads the parquet files, records its resident memory, then times
     clean_pings + detect_visits, and, as a baseline, the pure-pandas step
     `sort_values(["driver_id", "timestamp"]).drop_duplicates(["driver_id", "timestamp"])` on the same pings;
  3. reads the child's peak memory from resource.getrusage(RUSAGE_SELF).ru_maxrss in the child (Linux: KiB),
     reported both as the whole peak and as the increment over the loaded inputs.

Results go to benchmarks/results/geofence_throughput.json (one entry per size).

With `--peer` (default on), the script also runs movingpandas' stop detector (TrajectoryStopDetector, version
0.23, diameter 2 x the fence radius, minimum duration min_dwell_s) on a slice of the same world (`--peer-days`
days, cleaned pings, one trajectory per driver and day) and this project's detector on the same slice, and
writes both throughputs, their ratio and both detectors' recall and service-time MAE against the truth.
movingpandas needs NumPy 2 while this project pins numpy<2, so it runs in its own virtual environment, which
the script creates on first use (`--peer-venv`, default in the system's temporary folder) with pip from the
package index; nothing is downloaded when it exists.

With `--real-tracks WHEEL` (the tracktable-data wheel that `make real-logs` downloads), both detectors also run on a
real week of AIS positions in New York Harbor, the Staten Island Ferry's calls at its two terminals as the stops
(kronkers_ml.service_time.real_tracks): ours with env.yaml's settings and the three that data changes
(FERRY_SETTINGS), movingpandas with the same radius and minimum stay, once with one route per vessel and once with one
per vessel and day; the JSON gets a `real_tracks` entry.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"1M": 73, "10M": 730}          # days of the default-size world
PEER_SPEC = ["movingpandas==0.23.0"]
RADIUS_M, MIN_DWELL_S = 50.0, 60.0      # the defaults of env.yaml; the peer gets diameter 2 x radius
UTM_CRS = "EPSG:32632"                  # UTM zone 32N: metres around Oslo, where the generated world lies
PEER_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd, geopandas as gpd, movingpandas as mpd
from datetime import timedelta
src, out, diameter, min_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
p = pd.read_csv(src)
p["t"] = pd.to_datetime(p["t_ns"], unit="ns")
gdf = gpd.GeoDataFrame(p, geometry=gpd.points_from_xy(p["lon"], p["lat"]), crs="EPSG:4326").to_crs(sys.argv[5])
t0 = time.perf_counter()                    # projected to metres (UTM) first: planar distances, as in the project's detector
tc = mpd.TrajectoryCollection(gdf, traj_id_col="traj", t="t")
build_s = time.perf_counter() - t0
t0 = time.perf_counter()
stops = mpd.TrajectoryStopDetector(tc).get_stop_points(max_diameter=diameter, min_duration=timedelta(seconds=min_s))
detect_s = time.perf_counter() - t0
where = gpd.GeoSeries(stops.geometry.to_numpy(), crs=sys.argv[5]).to_crs("EPSG:4326")
res = pd.DataFrame({"traj": stops["traj_id"].to_numpy(), "start": pd.to_datetime(stops["start_time"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                    "end": pd.to_datetime(stops["end_time"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f"), "lat": where.y.to_numpy(),
                    "lon": where.x.to_numpy()})
res.to_csv(out, index=False)
print(json.dumps({"seconds_build": build_s, "seconds_detect": detect_s, "n_stops": len(res), "movingpandas": mpd.__version__}))
"""
WORLD = dict(n_customers=6000, n_drivers=9, start="2024-01-01", stops_per_route=11.0, ping_interval_s=5.0)


def _rss_mb() -> float:
    "Current resident set size of this process in MiB (Linux /proc)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(days: int, seed: int, folder: Path) -> None:
    "Child: simulate the default-size world for `days` days and write the four tables to parquet."
    from kronkers_ml.service_time.generator import simulate_service_data
    t = time.perf_counter()
    data = simulate_service_data(days=days, seed=seed, progress=False, **WORLD)
    gen_s = time.perf_counter() - t
    for name, df in data.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "gen.json").write_text(json.dumps({"generation_seconds": gen_s,
                                                 "generation_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(folder: Path) -> None:
    "Child: load the tables, time clean_pings + detect_visits and the pandas baseline; print JSON."
    import pandas as pd
    from kronkers_ml.service_time.geofence import clean_pings, detect_visits, geofence_accuracy
    pings = pd.read_parquet(folder / "pings.parquet")
    stops = pd.read_parquet(folder / "stops.parquet")
    customers = pd.read_parquet(folder / "customers.parquet")
    truth = pd.read_parquet(folder / "truth.parquet")
    input_rss = _rss_mb()
    t = time.perf_counter(); clean = clean_pings(pings); clean_s = time.perf_counter() - t
    t = time.perf_counter(); visits = detect_visits(clean, stops, customers, progress=False); detect_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del clean
    t = time.perf_counter()
    base = pings.sort_values(["driver_id", "timestamp"]).drop_duplicates(["driver_id", "timestamp"])
    base_s = time.perf_counter() - t
    del base
    acc = geofence_accuracy(visits, truth, stops)
    n = len(pings)
    print(json.dumps({
        "n_pings": n, "n_stops": len(stops), "n_visits": len(visits),
        "seconds_clean": round(clean_s, 3), "seconds_detect": round(detect_s, 3), "seconds": round(clean_s + detect_s, 3),
        "pings_per_second": round(n / (clean_s + detect_s)),
        "peak_rss_mb": round(peak, 1), "input_rss_mb": round(input_rss, 1), "peak_increment_mb": round(peak - input_rss, 1),
        "baseline_pandas_sort_dedupe_seconds": round(base_s, 3),
        "baseline_pandas_sort_dedupe_pings_per_second": round(n / base_s),
        "ratio_pipeline_to_baseline_throughput": round(base_s / (clean_s + detect_s), 3),
        "stop_recall": round(acc["stop_recall"], 4), "stop_precision": round(acc["stop_precision"], 4),
        "service_time_mae_s": round(acc["service_time_mae_s"], 2),
    }))


def peer_python(venv: Path) -> Path:
    "Python of a virtual environment with movingpandas 0.23, created with pip on first use."
    py = venv / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", "import movingpandas"], capture_output=True).returncode:
        subprocess.run([sys.executable if sys.prefix == sys.base_prefix else sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_SPEC], check=True)
    return py


def _match(found: "pd.DataFrame", truth: "pd.DataFrame", stops: "pd.DataFrame", customers: "pd.DataFrame", radius_m: float = RADIUS_M) -> dict:
    "Recall and service-time MAE of stays (driver_id, start, end, lat, lon) against truth: a served stop is found by the stay of its driver that overlaps it longest, within 2 x radius of the address."
    import numpy as np
    import pandas as pd
    from kronkers_ml.service_time.geofence import to_local_metres
    t = truth.merge(stops[["stop_id", "driver_id", "customer_id"]], on="stop_id").merge(customers[["customer_id", "lat", "lon"]], on="customer_id")
    m = t.merge(found, on="driver_id", suffixes=("", "_stay"))
    overlap = (np.minimum(m["departure"], m["end"]) - np.maximum(m["arrival"], m["start"])).dt.total_seconds()
    dx, dy = to_local_metres(m["lat_stay"].to_numpy(), m["lon_stay"].to_numpy(), float(m["lat"].mean()), float(m["lon"].mean()))
    ax, ay = to_local_metres(m["lat"].to_numpy(), m["lon"].to_numpy(), float(m["lat"].mean()), float(m["lon"].mean()))
    m = m[(overlap > 0) & (np.hypot(dx - ax, dy - ay) <= 2 * radius_m)].assign(overlap=overlap)
    best = m.sort_values("overlap").drop_duplicates("stop_id", keep="last")
    err = (best["end"] - best["start"]).dt.total_seconds() - best["service_time_s"]
    return {"stop_recall": round(len(best) / len(truth), 4), "service_time_mae_s": round(float(err.abs().mean()), 2)}


def movingpandas_stays(py: Path, pings: "pd.DataFrame", traj: "pd.Series", radius_m: float, min_dwell_s: float, utm_crs: str):
    "movingpandas' stop detector (diameter 2 x radius_m) on `pings` cut into trajectories `traj` (ids of the form DRIVER-...), in its venv: (stays, timings)."
    import pandas as pd
    with tempfile.TemporaryDirectory(prefix="geofence_peer_") as tmp:
        src, out = Path(tmp) / "pings.csv", Path(tmp) / "stops.csv"
        pd.DataFrame({"traj": traj.to_numpy(), "t_ns": pings["timestamp"].astype("int64"), "lat": pings["lat"], "lon": pings["lon"]}).to_csv(src, index=False)
        done = subprocess.run([str(py), "-c", PEER_SCRIPT, str(src), str(out), str(2 * radius_m), str(min_dwell_s), utm_crs],
                              check=True, capture_output=True, text=True)
        rec = json.loads(done.stdout.strip().splitlines()[-1])
        st = pd.read_csv(out)
    found = pd.DataFrame({"driver_id": st["traj"].str.split("-").str[0].astype("int64"), "start": pd.to_datetime(st["start"]),
                          "end": pd.to_datetime(st["end"]), "lat": st["lat"], "lon": st["lon"]})
    return found, rec


def side_by_side(py: Path, tables: dict, settings: dict, traj: "pd.Series", utm_crs: str) -> dict:
    "This project's detector (best of three, `settings`) and movingpandas' on the same clean pings, against the same truth."
    from kronkers_ml.service_time.geofence import detect_visits, geofence_accuracy
    clean, n = tables["pings"], len(tables["pings"])
    best = float("inf")
    for _ in range(3):                                  # best of three: a slice takes about a second
        t = time.perf_counter(); visits = detect_visits(clean, tables["stops"], tables["customers"], progress=False, **settings)
        best = min(best, time.perf_counter() - t)
    ours = geofence_accuracy(visits, tables["truth"], tables["stops"])
    radius_m, min_dwell_s = float(settings.get("radius_m", RADIUS_M)), float(settings.get("min_dwell_s", MIN_DWELL_S))
    found, rec = movingpandas_stays(py, clean, traj, radius_m, min_dwell_s, utm_crs)
    peer_acc = _match(found, tables["truth"], tables["stops"], tables["customers"], radius_m)
    peer_s = rec["seconds_build"] + rec["seconds_detect"]
    return {"n_pings": n, "n_stops": len(tables["stops"]), "n_truth": len(tables["truth"]),
            "ours": {"seconds": round(best, 3), "pings_per_second": round(n / best), "stop_recall": round(ours["stop_recall"], 4),
                     "stop_precision": round(ours["stop_precision"], 4), "service_time_mae_s": round(ours["service_time_mae_s"], 2),
                     "service_time_median_ae_s": round(ours["service_time_median_ae_s"], 2)},
            "movingpandas": {"version": rec["movingpandas"], "max_diameter_m": 2 * radius_m, "min_duration_s": min_dwell_s,
                             "seconds_build": round(rec["seconds_build"], 3), "seconds_detect": round(rec["seconds_detect"], 3),
                             "pings_per_second": round(n / peer_s), "n_stays": rec["n_stops"], **peer_acc},
            "ratio_ours_to_movingpandas_throughput": round(peer_s / best, 1)}


def run_peer(days: int, seed: int, venv: Path) -> dict:
    "Both detectors on the same slice (cleaned pings of `days` days of the default world, env.yaml's defaults; one trajectory per driver and day)."
    from kronkers_ml.service_time.geofence import clean_pings
    from kronkers_ml.service_time.generator import simulate_service_data
    data = simulate_service_data(days=days, seed=seed, progress=False, **WORLD)
    data["pings"] = clean = clean_pings(data["pings"])
    traj = clean["driver_id"].astype(str) + "-" + clean["timestamp"].dt.strftime("%Y%m%d")
    return {"days": days, **side_by_side(peer_python(venv), data, {}, traj, UTM_CRS)}


def run_real_tracks(wheel: Path, venv: Path) -> dict:
    """Both detectors on the real week of New York Harbor AIS positions (kronkers_ml.service_time.real_tracks): ours with env.yaml's
    settings and the three the ferry data changes (FERRY_SETTINGS), the peer with the same radius and minimum stay; one trajectory
    per vessel for the peer (calls cross midnight)."""
    import yaml
    from kronkers_ml.service_time.data import load_service_data
    from kronkers_ml.service_time.geofence import clean_pings
    from kronkers_ml.service_time.real_tracks import FERRY_SETTINGS, FERRY_TIMEZONE, write_real_tracks
    from kronkers_ml.service_time.settings import CleanGeofences
    env = yaml.safe_load((Path(__file__).resolve().parents[1] / "env.yaml").read_text())
    settings = CleanGeofences.from_env({"service_time": {**env["service_time"], **FERRY_SETTINGS}}).as_params()
    out = {"data": "tracktable-data 1.7.3.1, NYHarbor_2020_12_first_week.traj", "settings_changed": FERRY_SETTINGS}
    for routes in ("vessel", "day"):
        with tempfile.TemporaryDirectory(prefix="geofence_real_") as tmp:
            tables = load_service_data(write_real_tracks("nyharbor", tmp, wheel, routes=routes), tz=FERRY_TIMEZONE)
        tables["pings"] = clean = clean_pings(tables["pings"])
        out[f"routes_per_{routes}"] = side_by_side(peer_python(venv), tables, settings, clean["driver_id"].astype(str) + "-v", "EPSG:32618")
    return out


def run_size(label: str, days: int, seed: int) -> dict:
    "Parent: generate in one child, measure in a fresh child, return the merged record."
    with tempfile.TemporaryDirectory(prefix="geofence_bench_") as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, __file__, "_generate", str(days), str(seed), tmp], check=True)
        out = subprocess.run([sys.executable, __file__, "_measure", tmp], check=True, capture_output=True, text=True)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        rec.update(json.loads((folder / "gen.json").read_text()))
    return {"size": label, "days": days, **rec}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", choices=sorted(SIZES), default=["1M", "10M"], help="sizes to run (default: 1M 10M; none: the peer only)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True, help="also run movingpandas' stop detector on a slice (default on)")
    parser.add_argument("--peer-days", type=int, default=7, help="days of the default world in the peer slice (default 7, ~100k pings)")
    parser.add_argument("--peer-venv", type=Path, default=Path(tempfile.gettempdir()) / "kronkers-movingpandas-0.23",
                        help="virtual environment for movingpandas (created on first use)")
    parser.add_argument("--real-tracks", type=Path, default=None, metavar="WHEEL",
                        help="also run both detectors on the real New York Harbor week in this tracktable-data wheel (`make real-logs` downloads it)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "geofence_throughput.json",
                        help="output JSON (default benchmarks/results/geofence_throughput.json)")
    args = parser.parse_args(argv)
    results = []
    load_start = [round(x, 2) for x in os.getloadavg()]
    for label in args.sizes:
        rec = run_size(label, SIZES[label], args.seed)
        print(f"{label}: {rec['n_pings']:,} pings in {rec['seconds']:.1f} s = {rec['pings_per_second']:,} pings/s, "
              f"peak {rec['peak_rss_mb']:.0f} MiB (+{rec['peak_increment_mb']:.0f} over inputs); "
              f"pandas sort+dedupe alone {rec['baseline_pandas_sort_dedupe_pings_per_second']:,} pings/s; "
              f"recall {rec['stop_recall']}, precision {rec['stop_precision']}, MAE {rec['service_time_mae_s']} s", flush=True)
        results.append(rec)
    peer = None
    if args.peer:
        peer = run_peer(args.peer_days, args.seed, args.peer_venv)
        print(f"peer slice: {peer['n_pings']:,} pings; ours {peer['ours']['pings_per_second']:,} pings/s, movingpandas "
              f"{peer['movingpandas']['pings_per_second']:,} pings/s: {peer['ratio_ours_to_movingpandas_throughput']}x; "
              f"recall {peer['ours']['stop_recall']} vs {peer['movingpandas']['stop_recall']}, MAE {peer['ours']['service_time_mae_s']} s "
              f"vs {peer['movingpandas']['service_time_mae_s']} s", flush=True)
    real = None
    if args.real_tracks:
        real = run_real_tracks(args.real_tracks, args.peer_venv)
        for routes in ("vessel", "day"):
            r = real[f"routes_per_{routes}"]
            print(f"real week, one route per {routes}: {r['n_pings']:,} pings, {r['n_truth']} calls; ours {r['ours']['pings_per_second']:,} "
                  f"pings/s, movingpandas {r['movingpandas']['pings_per_second']:,}: {r['ratio_ours_to_movingpandas_throughput']}x; recall "
                  f"{r['ours']['stop_recall']} vs {r['movingpandas']['stop_recall']}, precision {r['ours']['stop_precision']}, MAE "
                  f"{r['ours']['service_time_mae_s']} s vs {r['movingpandas']['service_time_mae_s']} s", flush=True)
    import numpy, pandas
    doc = {"benchmark": "geofence_throughput", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                       "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
                       "numpy": numpy.__version__, "pandas": pandas.__version__},
           "method": "each size measured in a fresh subprocess after loading parquet inputs; seconds = clean_pings + "
                     "detect_visits wall time (perf_counter); peak memory = ru_maxrss (RUSAGE_SELF) of that subprocess; "
                     "baseline = pandas sort_values + drop_duplicates on the same raw pings",
           "load_average_1_5_15_at_start": load_start,
           "world": WORLD, "seed": args.seed, "results": results, "peer": peer, "real_tracks": real}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_generate":
        generate(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_measure":
        measure(Path(sys.argv[2]))
    else:
        main()
