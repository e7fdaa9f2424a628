"""Time a cold `ploomber build` and a no-op rebuild of the pipeline; write the figures as JSON.

    .venv/bin/python benchmarks/pipeline_build.py              # default run (env.yaml)
    .venv/bin/python benchmarks/pipeline_build.py --env test   # the tiny run (env.test.yaml)

The cold build writes into a fresh temporary folder, so it never touches outputs/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_build(out: Path, env_file: str) -> tuple[float, str]:
    "Seconds taken by one `ploomber build` into `out`, and its output."
    env = dict(os.environ, PLOOMBER_ENV_FILENAME=env_file, PLOOMBER_STATS_ENABLED="false",
               PLOOMBER_VERSION_CHECK_DISABLED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(Path(sys.executable).parent / "ploomber"), "build", "--entry-point", "pipeline.yaml", "--env--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"ploomber build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def task_seconds(stdout: str) -> dict[str, float]:
    "Per-task elapsed seconds from ploomber's closing table (tasks that ran)."
    return {m[0]: float(m[1]) for m in re.findall(r"^(\S+)\s+True\s+([\d.]+)", stdout, flags=re.M)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=["default", "test"], default="default", help="which env file to build")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write (default benchmarks/results/)")
    args = parser.parse_args(argv)
    env_file = "env.yaml" if args.env == "default" else "env.test.yaml"
    output = args.output or ROOT / "benchmarks" / "results" / f"pipeline_build_{args.env}.json"
    with tempfile.TemporaryDirectory(prefix="kronkers-bench-") as tmp:
        cold, cold_log = timed_build(Path(tmp), env_file)
        noop, noop_log = timed_build(Path(tmp), env_file)
    result = {
        "benchmark": "pipeline_build", "env_file": env_file,
        "cold_build_s": round(cold, 2), "noop_rebuild_s": round(noop, 2),
        "noop_to_cold_ratio": round(noop / cold, 4),
        "tasks_run_cold_s": task_seconds(cold_log), "tasks_run_noop": sorted(task_seconds(noop_log)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
