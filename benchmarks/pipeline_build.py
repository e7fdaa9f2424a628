"""Time a cold `ploomber build` and a no-op rebuild of the pipeline; write the figures as JSON.

    .venv/bin/python benchmarks/pipeline_build.py              # default run (env.yaml)
    .venv/bin/python benchmarks/pipeline_build.py --env test   # the tiny run (env.test.yaml)

The cold build writes into a fresh temporary folder, so it never touches outputs/.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, task_seconds, timed_build, write_result  # noqa: E402


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
        "machine": machine_info(),
    }
    write_result(result, output)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
