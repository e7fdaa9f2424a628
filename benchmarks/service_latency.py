"""Single-stop service-time prediction latency and throughput: our service vs `mlflow models serve`, same model version.

Starts both servers on 127.0.0.1 (free ports) on the champion of `service-time` in the build's MLflow store, sends
single-stop requests at several concurrency levels from one asyncio client (bounded: --requests per level), and
reports p50/p99 latency (ms) and requests per second. Then a reload-under-load run: requests at the highest
concurrency while the champion is reloaded several times, counting failed requests.

Needs a build (`make build`, or `--out outputs-test` after the tiny run). Keys and the audit log of the run go to a
temporary folder; the build's store is only read. Writes benchmarks/results/service_latency.json and prints it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, load, machine_info, wait_up, write_result  # noqa: E402

BIN = Path(sys.executable).parent



def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs", help="build outputs with service_time/ and mlflow/ (default: %(default)s)")
    ap.add_argument("--levels", default="1,4,8", help="concurrency levels (default: %(default)s)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per level and server (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up requests per server (default: %(default)s)")
    ap.add_argument("--reloads", type=int, default=5, help="reloads during the reload-under-load run (default: %(default)s)")
    ap.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models serve`")
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "service_latency.json"))
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    levels = [int(x) for x in args.levels.split(",")]
    uri = f"sqlite:///{out / 'mlflow' / 'mlflow.db'}"
    sys.path.insert(0, str(ROOT))
    from kronkers_ml.platform.access import create_key, load_roles
    from kronkers_ml.platform.registry import champion_version
    from kronkers_ml.service_time.features import FEATURES
    version = champion_version(uri, "service-time")
    if version is None:
        raise SystemExit(f"no champion of service-time in {uri}: build the pipeline first")
    feats = pd.read_parquet(out / "service_time" / "features.parquet")
    row = feats.tail(1)[FEATURES].astype(object)
    row = row.where(row.notna(), None).to_dict("records")[0]
    row["zone"] = str(row["zone"])

    tmp = Path(tempfile.mkdtemp(prefix="svc-bench-"))
    key = create_key(tmp / "keys.json", "admin", load_roles(ROOT / "config" / "roles.yaml"), "benchmark")[1]
    # `mlflow models serve` starts `uvicorn` from PATH: the environment's own bin first
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = {"benchmark": "service_latency", "model": "service-time", "version": version,
              "machine": machine_info(),
              "levels": levels, "requests_per_level": args.requests, "ours": [], "mlflow": [], "mlflow_error": None}
    procs = []
    try:
        port = free_port()
        ours = subprocess.Popen([str(BIN / "kronkers"), "serve", "--port", str(port), "--out", str(out),
                                 "--keys", str(tmp / "keys.json"), "--audit-log", str(tmp / "audit.jsonl"),
                                 "--roles", str(ROOT / "config" / "roles.yaml"), "--models", "service-time"],
                                env=env, stdout=open(tmp / "ours.log", "w"), stderr=subprocess.STDOUT)
        procs.append(ours)
        wait_up(f"http://127.0.0.1:{port}/ready", ours, 120, tmp / "ours.log")
        ours_url = f"http://127.0.0.1:{port}/v1/models/service-time/predict"
        ours_body, ours_headers = {"stops": [row]}, {"X-API-Key": key}

        mlflow_url = None
        if not args.no_mlflow:
            mport = free_port()
            ml = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/service-time/{version}",
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mport), "--workers", "1"],
                                  env=env, stdout=open(tmp / "mlflow.log", "w"), stderr=subprocess.STDOUT)
            procs.append(ml)
            try:
                wait_up(f"http://127.0.0.1:{mport}/ping", ml, 180, tmp / "mlflow.log")
                mlflow_url = f"http://127.0.0.1:{mport}/invocations"
            except RuntimeError as e:
                result["mlflow_error"] = str(e)[-2000:]
        ml_body = {"dataframe_records": [row]}

        asyncio.run(load(ours_url, ours_body, ours_headers, 2, args.warmup))
        if mlflow_url: asyncio.run(load(mlflow_url, ml_body, {}, 2, args.warmup))
        for c in levels:                                     # interleaved: both servers see the same machine state
            result["ours"].append(asyncio.run(load(ours_url, ours_body, ours_headers, c, args.requests)))
            if mlflow_url: result["mlflow"].append(asyncio.run(load(mlflow_url, ml_body, {}, c, args.requests)))
            print(json.dumps({"concurrency": c, "ours": result["ours"][-1],
                              "mlflow": result["mlflow"][-1] if mlflow_url else None}), flush=True)

        async def reloads(client):
            codes = []
            for _ in range(args.reloads):
                r = await client.post(f"http://127.0.0.1:{port}/v1/admin/reload", headers=ours_headers)
                codes.append(r.status_code)
                await asyncio.sleep(0.05)
            return {"reloads": len(codes), "reload_statuses": codes}
        result["reload_under_load"] = asyncio.run(load(ours_url, ours_body, ours_headers, max(levels), args.requests, reloads))
        if result["mlflow"]:
            top = max(levels)
            o = next(r for r in result["ours"] if r["concurrency"] == top)
            m = next(r for r in result["mlflow"] if r["concurrency"] == top)
            result["throughput_ratio_at_max_concurrency"] = round(o["requests_per_s"] / m["requests_per_s"], 2)
    finally:
        for p in procs:
            p.terminate()
            try: p.wait(timeout=20)
            except subprocess.TimeoutExpired: p.kill()
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    write_result(result, args.result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "mlflow")}, indent=2))
    return result


if __name__ == "__main__":
    main()
