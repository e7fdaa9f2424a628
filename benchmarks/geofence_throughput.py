"""Geofence throughput benchmark: clean_pings + detect_visits on ~1M and ~10M simulated pings.

For each size the script
  1. generates the data with kronkers_ml.service_sim (default-size world: 6000 customers, 9 drivers,
     11 stops per route; ~73 days give ~1M pings, 730 days ~10M) in a child process and writes the
     pings, stops, customers and truth to parquet in a temporary folder (not timed);
  2. starts a *fresh* child process that loads the parquet files, records its resident memory, then times
     clean_pings + detect_visits, and, as a baseline, the pure-pandas step
     `sort_values(["driver_id", "timestamp"]).drop_duplicates(["driver_id", "timestamp"])` on the same pings;
  3. reads the child's peak memory from resource.getrusage(RUSAGE_SELF).ru_maxrss in the child (Linux: KiB),
     reported both as the whole peak and as the increment over the loaded inputs.

Results go to benchmarks/results/geofence_throughput.json (one entry per size).
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
WORLD = dict(n_customers=6000, n_drivers=9, start="2024-01-01", stops_per_route=11.0, ping_interval_s=5.0)


def _rss_mb() -> float:
    "Current resident set size of this process in MiB (Linux /proc)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(days: int, seed: int, folder: Path) -> None:
    "Child: simulate the default-size world for `days` days and write the four tables to parquet."
    from kronkers_ml.service_sim import simulate_service_data
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
    from kronkers_ml.geofence import clean_pings, detect_visits, geofence_accuracy
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
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["1M", "10M"], help="sizes to run (default: 1M 10M)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
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
    import numpy, pandas
    doc = {"benchmark": "geofence_throughput", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                       "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
                       "numpy": numpy.__version__, "pandas": pandas.__version__},
           "method": "each size measured in a fresh subprocess after loading parquet inputs; seconds = clean_pings + "
                     "detect_visits wall time (perf_counter); peak memory = ru_maxrss (RUSAGE_SELF) of that subprocess; "
                     "baseline = pandas sort_values + drop_duplicates on the same raw pings",
           "load_average_1_5_15_at_start": load_start,
           "world": WORLD, "seed": args.seed, "results": results}
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
