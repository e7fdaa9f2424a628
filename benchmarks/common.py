"""Pieces every benchmark script shares: timing a `ploomber build`, waiting for a server and loading it with requests,
the machine it ran on, the JSON result."""
from __future__ import annotations

import asyncio
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


def wait_up(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    "Wait until `url` answers 200; fail with the end of `log` when the server `proc` exits first or `timeout_s` passes."
    import httpx
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {Path(log).read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200: return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout_s} s")


async def load(url, body: dict | None, headers: dict, concurrency: int, n: int, during=None, method: str = "POST") -> dict:
    """Send `n` requests with `concurrency` in flight (`url`: an address, or a function of the request's number that
    returns one; `body`: JSON, or None); optional coroutine `during` runs alongside (reloads). Latency percentiles
    in ms and requests per second."""
    import httpx
    import numpy as np
    lat, errors, statuses = [], 0, {}
    todo = iter(range(n))
    address = url if callable(url) else (lambda i: url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def worker():
            nonlocal errors
            for i in todo:
                t0 = time.perf_counter()
                try:
                    r = await client.request(method, address(i), json=body, headers=headers)
                    code = r.status_code
                except httpx.HTTPError as e:
                    code = type(e).__name__
                lat.append(time.perf_counter() - t0)
                statuses[str(code)] = statuses.get(str(code), 0) + 1
                if code != 200: errors += 1
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        extra = await during(client) if during else None
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"concurrency": concurrency, "requests": n, "failed": errors, "statuses": statuses,
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "requests_per_s": round(n / wall, 1), "wall_s": round(wall, 2),
            **({"during": extra} if extra is not None else {})}
