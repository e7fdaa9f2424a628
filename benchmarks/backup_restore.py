"""Backup and restore of a build's store: archive size, `kronkers backup` and `kronkers restore` wall time, and the time
to recover (restore, then a service started on the restored folder until /ready answers 200 with every champion loaded).

Needs a build (`make build`, or `--out outputs-test` after the tiny run). The build's store is only read: the
tracking URI is passed explicitly, the archive and the restored folder go to a temporary folder. Each command runs
`--repeat` times; the figures are the median and the fastest. Writes benchmarks/results/backup_restore.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, machine_info, write_result  # noqa: E402

BIN = Path(sys.executable).parent



def timed(cmd: list[str]) -> tuple[float, dict]:
    "Wall seconds of one command and the JSON it prints."
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def ready_seconds(restored: Path, log: Path, timeout_s: float = 600) -> tuple[float, dict]:
    "Seconds from `kronkers serve` on the restored folder to /ready 200, and what /ready says."
    port = free_port()
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "kronkers"), "serve", "--port", str(port), "--out", str(restored),
                                 "--state-dir", str(restored / "state"), "--roles", str(ROOT / "config" / "roles.yaml")],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None: sys.exit(f"service exited: {log.read_text()[-3000:]}")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if r.status_code == 200: return time.perf_counter() - t0, r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        sys.exit(f"the restored service was not ready in {timeout_s} s: {log.read_text()[-3000:]}")
    finally:
        proc.terminate(); proc.wait(timeout=30)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs", help="the build's outputs folder (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "backup_restore.json"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    db = out / "mlflow" / "mlflow.db"
    if not db.is_file(): sys.exit(f"no MLflow store at {db}: build first (make build)")
    runs = {"backup_s": [], "restore_s": [], "ready_s": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        state = tmp / "state"                                   # keys and audit log of this run (none: the store is the bulk)
        for i in range(args.repeat):
            archive = tmp / f"backup-{i}.tar.gz"
            s, backup = timed([str(BIN / "kronkers"), "backup", "--tracking-uri", f"sqlite:///{db}", "--out", str(out),
                               "--state-dir", str(state), "--to", str(archive)])
            runs["backup_s"].append(s)
            s, restore = timed([str(BIN / "kronkers"), "restore", str(archive), "--to", str(tmp / f"restored-{i}")])
            runs["restore_s"].append(s)
            s, ready = ready_seconds(tmp / f"restored-{i}", tmp / f"serve-{i}.log")
            runs["ready_s"].append(s)
        result = {
            "benchmark": "backup_restore", "out": str(out), "machine": machine_info(), "repeat": args.repeat,
            "store_db_bytes": db.stat().st_size, "artifacts_bytes": tree_bytes(out / "mlflow" / "artifacts"),
            "archive_bytes": backup["archive_bytes"], "archived_bytes": backup["data_bytes"], "files": backup["files"],
            "store_counts": backup["store_counts"], "served_after_restore": ready["models"],
            "backup_s": {"median": round(statistics.median(runs["backup_s"]), 3), "min": round(min(runs["backup_s"]), 3)},
            "restore_s": {"median": round(statistics.median(runs["restore_s"]), 3), "min": round(min(runs["restore_s"]), 3)},
            "restored_service_ready_s": {"median": round(statistics.median(runs["ready_s"]), 3), "min": round(min(runs["ready_s"]), 3)},
            "recovery_s_median": round(statistics.median(r + s for r, s in zip(runs["restore_s"], runs["ready_s"])), 3),
            "runs": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
            "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        }
    print(json.dumps(result, indent=2))
    write_result(result, args.result)


if __name__ == "__main__":
    main()
