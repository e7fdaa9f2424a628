"""Demand backtest: every candidate's fit time per fold (CPU seconds), serial vs parallel folds, and the demand branch's wall time.

    .venv/bin/python benchmarks/demand_backtest.py              # default run's parameters (env.yaml)
    .venv/bin/python benchmarks/demand_backtest.py --env test   # the tiny run (env.test.yaml)

The backtest is run twice in one process on the same data and folds, first with one process (serial),
then with one process per core (parallel); the JSON gives both wall times, their ratio (the speed-up),
each candidate's fit time in every fold of the serial run, and whether both runs gave identical forecasts. Then the
demand branch of the pipeline (get-demand-data .. forecast-demand) is built cold into a temporary folder and
timed, task by task. Nothing is written under outputs/.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine_info, task_seconds, timed_build, write_result  # noqa: E402

from kronkers_ml.demand.backtest import rolling_origins, run_backtest, validation_origins  # noqa: E402
from kronkers_ml.demand.series import daily_revenue  # noqa: E402
from kronkers_ml.demand.generator import simulate_transactions  # noqa: E402
from kronkers_ml.demand.data import check_transactions, clean_transactions, load_transactions  # noqa: E402


def demand_params(env_file: str) -> tuple[dict, int]:
    "The `demand:` block and the seed of an env file."
    env = yaml.safe_load((ROOT / env_file).read_text())
    return env["demand"], int(env["seed"])


def build_branch(env_file: str) -> tuple[float, dict[str, float]]:
    "Wall seconds of a cold `ploomber build --partially forecast-demand` into a temporary folder, and per-task seconds."
    with tempfile.TemporaryDirectory(prefix="kronkers-bench-") as tmp:
        seconds, stdout = timed_build(Path(tmp), env_file, "--partially", "forecast-demand")
    return seconds, task_seconds(stdout)


def max_rel_diff(a, b) -> float:
    "Largest relative difference between the numeric columns of two forecast tables of the same shape."
    cols = a.select_dtypes("number").columns
    x, y = a[cols].to_numpy(dtype=float), b[cols].to_numpy(dtype=float)
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1.0)))


def backtest_inputs(env_file: str) -> dict:
    """The backtest-demand task's inputs from an env file's parameters: the log (loaded or generated), the daily
    series, the folds' origins (validation then test) and the candidates; with the seconds the data took."""
    p, seed = demand_params(env_file)
    t0 = time.perf_counter()
    if p.get("transactions"):
        log = load_transactions(p["transactions"])
    else:
        log = check_transactions(simulate_transactions(start=p["start"], days=int(p["days"]),
                                                       invoices_per_day=float(p["invoices_per_day"]),
                                                       n_products=int(p["n_products"]), n_customers=int(p["n_customers"]),
                                                       growth=float(p["growth"]), seed=seed), "generated log")
    lines, _ = clean_transactions(log)
    daily = daily_revenue(lines)
    data_s = time.perf_counter() - t0
    horizon, n_origins, step = int(p["horizon"]), int(p["n_origins"]), int(p["step"])
    origins = rolling_origins(daily.date.max(), n_origins, horizon, step)
    origins = validation_origins(origins[0], int(p["n_valid"]), horizon, step) + origins
    names = [c.strip() for c in str(p["candidates"]).split(",") if c.strip()]
    cands = {c: {} for c in names}
    cands.update({k: v for k, v in {"sarima": {k: int(p[k]) for k in ("max_p", "max_q", "max_P", "max_Q")},
                                    "lightgbm": {"seed": seed, "horizon": horizon}}.items() if k in cands})
    return {"log": log, "daily": daily, "data_s": data_s, "names": names,
            "common": dict(daily=daily, origins=origins, horizon=horizon, candidates=cands, ma_window=int(p["ma_window"]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=["default", "test"], default="default", help="which env file's parameters")
    parser.add_argument("--n-jobs", type=int, default=-1, help="processes for the parallel run (-1: every core)")
    parser.add_argument("--skip-build", action="store_true", help="do not time the pipeline branch")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write (default benchmarks/results/)")
    args = parser.parse_args(argv)
    env_file = "env.yaml" if args.env == "default" else "env.test.yaml"
    output = args.output or ROOT / "benchmarks" / "results" / f"demand_backtest_{args.env}.json"

    inputs = backtest_inputs(env_file)
    log, daily, data_s, names, common = (inputs[k] for k in ("log", "daily", "data_s", "names", "common"))
    origins, horizon = common["origins"], common["horizon"]
    t0 = time.perf_counter()
    serial, serial_folds = run_backtest(**common, n_jobs=1)
    serial_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parallel, _ = run_backtest(**common, n_jobs=args.n_jobs)
    parallel_s = time.perf_counter() - t0
    result = {
        "benchmark": "demand_backtest", "env_file": env_file,
        "data": {"transaction_lines": len(log), "days": len(daily), "seconds": round(data_s, 2)},
        "folds": len(origins), "horizon_days": horizon,
        "fit_cpu_s_per_fold": {c: [round(s, 3) for s in serial_folds[f"fit_s_{c}"]] for c in names},
        "fit_cpu_s_mean": {c: round(float(serial_folds[f"fit_s_{c}"].mean()), 3) for c in names},
        "backtest_serial_s": round(serial_s, 2), "backtest_parallel_s": round(parallel_s, 2),
        "parallel_n_jobs": args.n_jobs, "parallel_speedup": round(serial_s / parallel_s, 3),
        # worker processes limit BLAS threads, so sums may round differently: compare within a tolerance
        "parallel_max_rel_diff": float(max_rel_diff(serial, parallel)),
        "parallel_matches_serial": bool(max_rel_diff(serial, parallel) < 1e-6),
        "machine": machine_info(),
    }
    if not args.skip_build:
        wall, tasks = build_branch(env_file)
        result["demand_branch_build_s"] = round(wall, 2)
        result["demand_branch_tasks_s"] = tasks
    write_result(result, output)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
