"""Recommendations: training time on the default data, and the latency and throughput of
GET /v1/models/recommendations/{customer_id}?k=10 at concurrency 1 and 8 against a real `kronkers serve` of the
build's champion; and the time of one batch export of every customer (GET /v1/campaigns/recommendations.csv).

    nice .venv/bin/python benchmarks/recommendations.py                     # builds env.yaml's recommendations into a temporary folder
    nice .venv/bin/python benchmarks/recommendations.py --out outputs       # an existing build: serve its champion, no training time

Without `--out`, a cold `ploomber build --partially register-recommendations` (and its upstream) on `--env` into a
temporary folder gives the training time (task train-recommendations, and the tasks around it) and the store whose
champion is served. Requests ask for customers of the served history in turn, with a marketing key. Keys and the
audit log go to a temporary folder; the build's store is only read. Writes benchmarks/results/recommendations.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, load, machine_info, task_seconds, timed_build, wait_up, write_result  # noqa: E402

BIN = Path(sys.executable).parent
TASKS = ("get-demand-data", "segment-customers", "train-recommendations", "evaluate-recommendations", "register-recommendations")


def export_seconds(base: str, headers: dict, k: int) -> dict:
    "Stream one export of every customer the model knows; its seconds, pieces, bytes and rows."
    import httpx
    t0, pieces, size, lines = time.perf_counter(), 0, 0, 0
    with httpx.stream("GET", f"{base}/v1/campaigns/recommendations.csv", params={"k": k}, headers=headers, timeout=600) as r:
        r.raise_for_status()
        customers = int(r.headers["X-Customers"])
        for piece in r.iter_raw():
            pieces, size, lines = pieces + 1, size + len(piece), lines + piece.count(b"\n")
    seconds = time.perf_counter() - t0
    return {"customers": customers, "rows": lines - 1, "bytes": size, "pieces": pieces, "seconds": round(seconds, 2),
            "customers_per_s": round(customers / seconds, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="an existing build (with the recommendations champion); default: build one")
    ap.add_argument("--env", default="env.yaml", help="env file of the build (default: %(default)s)")
    ap.add_argument("--levels", default="1,8", help="concurrency levels (default: %(default)s)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per level (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up requests (default: %(default)s)")
    ap.add_argument("--k", type=int, default=10, help="products per answer (default: %(default)s)")
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "recommendations.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import pandas as pd
    from kronkers_ml.platform.access import create_key, load_roles
    from kronkers_ml.platform.registry import champion_version
    from kronkers_ml.platform.tracking import tracking_uri
    from kronkers_ml.products import product_path

    result = {"benchmark": "recommendations", "machine": machine_info(), "load_avg_at_start": os.getloadavg(), "env": args.env, "k": args.k,
              "levels": [int(x) for x in args.levels.split(",")], "requests_per_level": args.requests}
    tmp = Path(tempfile.mkdtemp(prefix="recs-bench-"))
    if args.out:
        out = Path(args.out).resolve()
    else:
        out = tmp / "outputs"
        seconds, stdout = timed_build(out, args.env, "--partially", "register-recommendations")
        tasks = task_seconds(stdout)
        result["build"] = {"wall_s": round(seconds, 1), "tasks_s": {t: tasks[t] for t in TASKS if t in tasks}}
        result["training_s"] = tasks.get("train-recommendations")
        print(json.dumps(result["build"]), flush=True)
    uri = tracking_uri(out)
    version = champion_version(uri, "recommendations")
    if version is None:
        raise SystemExit(f"no champion of recommendations in {uri}: build the pipeline first")
    metrics = json.loads(product_path("recommendations.metrics", out).read_text())
    customers = pd.read_parquet(product_path("recommendations.history", out), columns=["customer_id"])["customer_id"].astype(str).unique()
    result |= {"version": version, "customers": int(len(customers)), "products": int(metrics["data"]["catalogue"]),
               "ndcg_at_10": metrics["model"].get("ndcg_at_10")}

    key = create_key(tmp / "keys.json", "marketing", load_roles(ROOT / "config" / "roles.yaml"), "benchmark")[1]
    headers = {"X-API-Key": key}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(BIN / "kronkers"), "serve", "--port", str(port), "--out", str(out), "--outputs", str(out),
                             "--keys", str(tmp / "keys.json"), "--audit-log", str(tmp / "audit.jsonl"),
                             "--roles", str(ROOT / "config" / "roles.yaml"), "--models", "recommendations"],
                            env=env, stdout=open(tmp / "serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_up(f"{base}/ready", proc, 300, tmp / "serve.log")
        url = lambda i: f"{base}/v1/models/recommendations/{customers[i % len(customers)]}?k={args.k}"
        asyncio.run(load(url, None, headers, 2, args.warmup, method="GET"))
        result["latency"] = []
        for c in result["levels"]:
            result["latency"].append(asyncio.run(load(url, None, headers, c, args.requests, method="GET")))
            print(json.dumps(result["latency"][-1]), flush=True)
        result["export"] = export_seconds(base, headers, args.k)
        print(json.dumps(result["export"]), flush=True)
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()
    result["load_avg_at_end"] = os.getloadavg()          # a shared machine: the other work beside the figures
    write_result(result, args.result)
    print(json.dumps({k: v for k, v in result.items() if k != "latency"}, indent=2))
    return result


if __name__ == "__main__":
    main()
