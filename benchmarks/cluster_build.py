"""Wall time of a cold `kronkers build --scheduler` with 1 worker against 2 workers, in one run on this machine.

    nice .venv/bin/python benchmarks/cluster_build.py                      # the default build (env.yaml)
    nice .venv/bin/python benchmarks/cluster_build.py --env test           # the tiny run (env.test.yaml)
    nice .venv/bin/python benchmarks/cluster_build.py --env test --partially 'check-*' --local

For each worker count a fresh `dask scheduler` and that many `dask worker` processes (one thread each) start on
127.0.0.1, the pipeline is built cold into a fresh temporary folder, and the cluster is stopped. `--local` adds a plain
`ploomber build` of the same tasks. Per configuration: wall seconds, tasks run, worker processes used, the sum of the
tasks' own seconds (from build/runs.jsonl), and the sha256 of every metrics.json, so the builds can be compared. The
JSON (benchmarks/results/cluster_build_<env>.json) is rewritten after each configuration, so a cut-short run keeps
what it measured. On one machine the workers share its cores: this measures how much of the pipeline runs side by
side, not what separate machines would gain.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, machine_info, task_seconds, write_result  # noqa: E402
from kronkers_ml.platform.cluster import local_cluster  # noqa: E402

BIN = Path(sys.executable).parent


def child_env(env_file: str) -> dict:
    env = dict(os.environ, PLOOMBER_ENV_FILENAME=env_file, PLOOMBER_STATS_ENABLED="false",
               PLOOMBER_VERSION_CHECK_DISABLED="1", PYTHONPATH=str(ROOT), WHYLOGS_NO_ANALYTICS="True",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MPLBACKEND", None)
    return env


def metrics_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("metrics.json"))}


def measure(n_workers: int, env_file: str, partially: str | None, tmp: Path) -> dict:
    "One cold build: on a cluster of `n_workers` workers, or a plain `ploomber build` when n_workers is 0."
    out, env = tmp / f"out-{n_workers}", child_env(env_file)
    logs = tmp / f"logs-{n_workers}"; logs.mkdir()
    select = ["--partially", partially] if partially else []
    with local_cluster(n_workers, env=env, cwd=ROOT, logs=logs) if n_workers else nullcontext() as address:
        if n_workers:
            cmd = [str(BIN / "kronkers"), "build", "--scheduler", address, *select, "--env--out", str(out)]
        else:
            cmd = [str(BIN / "ploomber"), "build", "--entry-point", "pipeline.yaml", *select, "--env--out", str(out)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    runs = [json.loads(line) for line in (out / "build" / "runs.jsonl").read_text().splitlines()] \
        if (out / "build" / "runs.jsonl").exists() else []
    ok = [r for r in runs if r["status"] == "ok"]
    return {"workers": n_workers or "local ploomber build", "returncode": done.returncode, "wall_s": round(seconds, 1),
            "tasks_run": len(ok) if n_workers else len(task_seconds(done.stdout)),
            "task_seconds_sum": round(sum(r["seconds"] for r in ok), 1) if n_workers else
            round(sum(task_seconds(done.stdout).values()), 1),
            "worker_pids": len({r["pid"] for r in ok}), "lost_or_failed": [r for r in runs if r["status"] != "ok"],
            "metrics_sha256": metrics_hashes(out),
            "output_tail": (done.stdout + done.stderr)[-1500:] if done.returncode else ""}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=["default", "test"], default="default", help="which env file to build")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default: %(default)s)")
    parser.add_argument("--partially", default=None, help="build only these tasks (a name or glob) and their upstream")
    parser.add_argument("--local", action="store_true", help="also time a plain `ploomber build` of the same tasks")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write (default benchmarks/results/)")
    args = parser.parse_args(argv)
    env_file = "env.yaml" if args.env == "default" else "env.test.yaml"
    output = args.output or ROOT / "benchmarks" / "results" / f"cluster_build_{args.env}.json"
    counts = [int(n) for n in args.workers.split(",")] + ([0] if args.local else [])
    result = {"benchmark": "cluster_build", "env_file": env_file, "partially": args.partially, "runs": [],
              "machine": machine_info(), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="kronkers-cluster-bench-") as tmp:
        for n in counts:
            result["runs"].append(measure(n, env_file, args.partially, Path(tmp)))
            result["load_average_now"] = os.getloadavg()
            write_result(result, output)
            print(json.dumps(result["runs"][-1], indent=2), flush=True)
    hashes = [r["metrics_sha256"] for r in result["runs"] if r["returncode"] == 0]
    result["same_metrics_json"] = (all(h == hashes[0] for h in hashes) if hashes and hashes[0] else None)  # None: none built
    write_result(result, output)
    return result


if __name__ == "__main__":
    main()
