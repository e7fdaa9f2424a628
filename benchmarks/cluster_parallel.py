"""Heavy steps on a Dask cluster: the demand backtest locally and through joblib's Dask backend on 1 and 2 workers,
and the service-time final fit locally and on `lightgbm.dask`, side by side in one run.

    nice .venv/bin/python benchmarks/cluster_parallel.py --env test --features outputs-test/service_time/features.parquet
    .venv/bin/python benchmarks/cluster_parallel.py --help

Backtest: backtest-demand's inputs from the env file's parameters (`benchmarks/demand_backtest.py`), run with one
process, with joblib's processes (`--n-jobs`, today's local run), then for each worker count a fresh scheduler and
workers (`local_cluster`, one process and one thread each, on 127.0.0.1) and the same `run_backtest` inside
`joblib_on_cluster`. Each wall time excludes starting the cluster (given apart); each run's forecasts are compared with
the one-process run's (identical, and the largest relative difference). LightGBM: the features of a build
(`--features`), split as train-service-time splits them; the final fit of train + valid with fixed parameters
(`--lgb-rounds` rounds, one thread) locally and with `fit_lightgbm_dask` on the 2-worker cluster, each timed and scored
by MAE on the test months. Writes benchmarks/results/cluster_parallel_<env>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine_info, write_result  # noqa: E402
from demand_backtest import backtest_inputs, max_rel_diff  # noqa: E402

from kronkers_ml.demand.backtest import run_backtest  # noqa: E402
from kronkers_ml.metrics import mae  # noqa: E402
from kronkers_ml.platform.cluster import joblib_on_cluster, local_cluster  # noqa: E402
from kronkers_ml.service_time.model import (base_lgb_params, fit_lightgbm, fit_lightgbm_dask, predict_lightgbm,  # noqa: E402
                                            time_split)
from kronkers_ml.service_time.settings import TrainServiceTime  # noqa: E402


def timed(fn):
    "(result, wall seconds) of `fn()`."
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def backtest_run(common: dict, reference: pd.DataFrame | None, **kw) -> tuple[dict, pd.DataFrame]:
    "One timed `run_backtest`: its wall seconds, the processes its folds ran in and how it compares with `reference`."
    (forecasts, folds), seconds = timed(lambda: run_backtest(**common, **kw))
    row = {"wall_s": round(seconds, 2), "processes": int(folds.pid.nunique())}
    if reference is not None:
        row["identical_to_one_process"] = bool(forecasts.equals(reference))
        row["max_rel_diff"] = max_rel_diff(reference, forecasts)
    return row, forecasts


def lgb_frames(path: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    "train + valid and test of a build's features, split as train-service-time does, and fixed LightGBM parameters."
    cfg = TrainServiceTime()
    split = time_split(pd.read_parquet(path), "date", valid_months=cfg.valid_months, test_months=cfg.test_months)
    params = {**base_lgb_params(seed, num_threads=1), "objective": "l1", "learning_rate": 0.05, "num_leaves": 31,
              "min_data_in_leaf": 20, "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1}
    return pd.concat([split.train, split.valid]), split.test, params


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=["default", "test"], default="test", help="which env file's demand parameters")
    parser.add_argument("--n-jobs", type=int, default=-1, help="joblib's processes for the local run (-1: every core)")
    parser.add_argument("--workers", default="1,2", help="worker counts of the cluster runs (default: %(default)s)")
    parser.add_argument("--features", type=Path, default=None,
                        help="service_time/features.parquet of a build; without it the LightGBM part is skipped")
    parser.add_argument("--lgb-rounds", type=int, default=300, help="boosting rounds of the final fit")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write (default benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.features is not None and not args.features.is_file():
        parser.error(f"--features {args.features}: no such file (build the pipeline first)")
    env_file = "env.yaml" if args.env == "default" else "env.test.yaml"
    output = args.output or ROOT / "benchmarks" / "results" / f"cluster_parallel_{args.env}.json"
    load_start = os.getloadavg()[0]
    inputs = backtest_inputs(env_file)
    common = inputs["common"]
    runs = {}
    runs["one process"], reference = backtest_run(common, None, n_jobs=1)
    runs[f"joblib processes (n_jobs={args.n_jobs})"], _ = backtest_run(common, reference, n_jobs=args.n_jobs)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lgb = None
    for n in [int(w) for w in args.workers.split(",")]:
        t0 = time.perf_counter()
        with local_cluster(n, env=env, cwd=ROOT) as scheduler:
            start_s = time.perf_counter() - t0
            with joblib_on_cluster({"scheduler": scheduler}):
                row, _ = backtest_run(common, reference, n_jobs=-1)
            runs[f"Dask, {n} worker{'s' if n > 1 else ''}"] = {**row, "cluster_start_s": round(start_s, 2)}
            if args.features is not None and n == max(int(w) for w in args.workers.split(",")):
                train, test, params = lgb_frames(args.features, args.seed)
                y = test.service_time_s.to_numpy()
                local, local_s = timed(lambda: fit_lightgbm(train, params, args.lgb_rounds, seed=args.seed))
                dask, dask_s = timed(lambda: fit_lightgbm_dask(train, params, args.lgb_rounds, scheduler, seed=args.seed))
                err = np.abs(y - predict_lightgbm(local, test))
                lgb = {"train_rows": len(train), "test_rows": len(test), "rounds": args.lgb_rounds, "workers": n,
                       "local": {"wall_s": round(local_s, 2), "test_mae_s": round(float(err.mean()), 3)},
                       "dask": {"wall_s": round(dask_s, 2), "test_mae_s": round(mae(y, predict_lightgbm(dask, test)), 3)},
                       "mae_standard_error_s": round(float(err.std(ddof=1) / np.sqrt(len(y))), 3)}
                lgb["dask_over_local_time"] = round(dask_s / local_s, 2)
    base = runs["one process"]["wall_s"]
    for row in runs.values():
        row["speedup_vs_one_process"] = round(base / row["wall_s"], 2)
    result = {"benchmark": "cluster_parallel", "env_file": env_file, "days": len(inputs["daily"]),
              "folds": len(common["origins"]), "candidates": inputs["names"], "backtest": runs, "lightgbm_final_fit": lgb,
              "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2),
              "machine": machine_info()}
    write_result(result, output)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
