"""Pieces every benchmark script shares: timing a `ploomber build`, the machine it ran on, the JSON result."""
from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    "A TCP port free on 127.0.0.1 now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_build(out: Path, env_file: str, *args: str) -> tuple[float, str]:
    "Seconds taken by one `ploomber build` into `out` (extra `args` go to ploomber), and its output."
    env = dict(os.environ, PLOOMBER_ENV_FILENAME=env_file, PLOOMBER_STATS_ENABLED="false",
               PLOOMBER_VERSION_CHECK_DISABLED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(Path(sys.executable).parent / "ploomber"), "build", "--entry-point", "pipeline.yaml",
           "--env--out", str(out), *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"ploomber build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def task_seconds(stdout: str) -> dict[str, float]:
    "Per-task elapsed seconds from ploomber's closing table (tasks that ran)."
    return {m[0]: float(m[1]) for m in re.findall(r"^(\S+)\s+True\s+([\d.]+)", stdout, flags=re.M)}


def machine_info() -> dict:
    "Cores, Python and platform of this machine, recorded beside every figure."
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_result(result: dict, path: str | Path) -> Path:
    "Write a benchmark's result as indented JSON (creating its folder)."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path
