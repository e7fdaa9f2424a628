"""Optuna trials per minute of the service-time tuning with 1 and 2 Dask workers, side by side in one run.

    nice .venv/bin/python benchmarks/optuna_cluster.py                       # the tiny run's features (env.test.yaml)
    nice .venv/bin/python benchmarks/optuna_cluster.py --features outputs/service_time/features.parquet --trials 20

A throw-away PostgreSQL server starts on 127.0.0.1 (`local_postgres`; Debian's `postgresql` must be installed). For
each worker count a fresh scheduler and that many worker processes (one thread each) start (`local_cluster`) and
`tune_lightgbm` runs `--trials` trials of one new study in PostgreSQL through `trials_on_cluster`, as a cluster build
of train-service-time does (here the calling process runs none: every trial is on a worker). Per configuration: wall
seconds of the tuning (the cluster's start not included), trials, trials per minute, trials per worker and the best
validation MAE. The in-memory run of today (`tune_lightgbm` in this process, one trial after the other) is timed too,
as the reference. The features come from `--features` (a features.parquet of a build), else from a tiny build made
here first. JSON: benchmarks/results/optuna_cluster.json, rewritten after each configuration. On one machine the
workers share its cores: separate machines would each bring their own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, machine_info, write_result  # noqa: E402
from kronkers_ml.platform.cluster import local_cluster, local_postgres, trials_on_cluster  # noqa: E402

BIN = Path(sys.executable).parent


def tiny_features(tmp: Path) -> Path:
    "features.parquet of the tiny run, built here (get, clean and featurise the service-time data)."
    env = dict(os.environ, PLOOMBER_ENV_FILENAME="env.test.yaml", PLOOMBER_STATS_ENABLED="false",
               PLOOMBER_VERSION_CHECK_DISABLED="1", PYTHONPATH=str(ROOT), WHYLOGS_NO_ANALYTICS="True")
    env.pop("MPLBACKEND", None)
    out = tmp / "tiny"
    done = subprocess.run([str(BIN / "ploomber"), "build", "--entry-point", "pipeline.yaml", "--partially",
                           "build-service-features", "--env--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode: sys.exit(f"the tiny build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return out / "service_time" / "features.parquet"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=None, help="a features.parquet (default: a tiny build's)")
    parser.add_argument("--trials", type=int, default=16, help="trials per configuration (default: %(default)s)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default: %(default)s)")
    parser.add_argument("--valid-months", type=int, default=2, help="months of validation (env.test.yaml's: %(default)s)")
    parser.add_argument("--test-months", type=int, default=2, help="months held out (env.test.yaml's: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "optuna_cluster.json")
    args = parser.parse_args(argv)
    import pandas as pd
    from kronkers_ml.service_time.model import time_split, tune_lightgbm
    result = {"benchmark": "optuna_cluster", "trials": args.trials, "runs": [], "machine": machine_info(),
              "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="kronkers-optuna-bench-") as tmp:
        features = args.features or tiny_features(Path(tmp))
        frame = pd.read_parquet(features)
        split = time_split(frame, "date", valid_months=args.valid_months, test_months=args.test_months)
        result.update(features=str(features.name), rows_train=len(split.train), rows_valid=len(split.valid))
        # num_threads=1: one LightGBM thread a trial, as a worker with one thread runs it
        common = dict(n_trials=args.trials, seed=args.seed, progress=False, num_threads=1)
        t0 = time.perf_counter()
        ref = tune_lightgbm(split.train, split.valid, **common)
        seconds = time.perf_counter() - t0
        result["runs"].append({"workers": "in memory, in this process (no cluster)", "wall_s": round(seconds, 1),
                               "trials": len(ref.study.trials), "trials_per_min": round(60 * len(ref.study.trials) / seconds, 2),
                               "best_valid_mae_s": round(ref.best_mae, 3)})
        write_result(result, args.output); print(json.dumps(result["runs"][-1]), flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with local_postgres(["optuna"]) as pg:
            storage = pg.url("optuna")
            for n in [int(x) for x in args.workers.split(",")]:
                with local_cluster(n, env=env, cwd=ROOT, logs=Path(tmp) / f"dask-{n}") as scheduler:
                    t0 = time.perf_counter()
                    res = tune_lightgbm(split.train, split.valid, **common, storage=storage, study_name=f"bench-{n}",
                                        optimize=trials_on_cluster(scheduler, storage, seed=args.seed))
                    seconds = time.perf_counter() - t0
                trials = res.study.trials
                by_worker = Counter(t.user_attrs.get("worker") for t in trials)
                result["runs"].append({"workers": n, "wall_s": round(seconds, 1), "trials": len(trials),
                                       "trials_per_min": round(60 * len(trials) / seconds, 2),
                                       "trials_per_worker": sorted(by_worker.values()),
                                       "unique_trial_numbers": len({t.number for t in trials}) == len(trials),
                                       "best_valid_mae_s": round(res.best_mae, 3)})
                result["load_average_now"] = os.getloadavg()
                write_result(result, args.output); print(json.dumps(result["runs"][-1]), flush=True)
    return result


if __name__ == "__main__":
    main()
