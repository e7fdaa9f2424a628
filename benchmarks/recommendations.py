"""Recommendations: training time on the default data, and the latency and throughput of
GET /v1/models/recommendations/{customer_id}?k=10 at concurrency 1 and 8 against a real `kronkers serve` of the
build's champion; the time of one batch export of every customer (GET /v1/campaigns/recommendations.csv); and,
side by side in-process, the served class as EASE and as the re-ranker (when the build registered the re-ranker).

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


def model_seconds(out: Path, customers, k: int, singles: int = 200, batch: int = 1000) -> dict:
    """In-process seconds of the served class on the build's products, as EASE and (when the build registered it) as
    the re-ranker, side by side: setting up, one customer at a time (`singles` customers) and `batch` at once."""
    import pandas as pd
    from kronkers_ml.core import read_json
    from kronkers_ml.products import product_path
    from kronkers_ml.recommendations.evaluate import load_model, load_ranker, load_segments
    from kronkers_ml.recommendations.family import RecommendationsModel
    model = load_model(product_path("recommendations.model", out))
    past = pd.read_parquet(product_path("recommendations.history", out))
    spec = read_json(product_path("recommendations.history_spec", out))
    kinds = {"ease": lambda: RecommendationsModel().setup(model, past, {**spec, "kind": "ease"})}
    if spec.get("kind") == "lambdarank":
        ranker, segments = load_ranker(product_path("recommendations.ranker", out)), load_segments(product_path("recommendations.segments", out))
        kinds["lambdarank"] = lambda: RecommendationsModel().setup(model, past, spec, ranker, segments)
    res = {}
    for name, make in kinds.items():
        t0 = time.perf_counter()
        m = make()
        setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for c in customers[:singles]:
            m.recommend(c, k)
        single_ms = (time.perf_counter() - t0) / min(singles, len(customers)) * 1000
        t0 = time.perf_counter()
        m.recommend_many(list(customers[:batch]), k)
        batch_s = time.perf_counter() - t0
        res[name] = {"setup_s": round(setup_s, 2), "single_ms": round(single_ms, 2), f"batch_{batch}_s": round(batch_s, 3)}
    if "lambdarank" in res:
        res["ratio_lambdarank_to_ease"] = {key: round(res["lambdarank"][key] / res["ease"][key], 2) for key in res["ease"]}
    return res


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
    result |= {"version": version, "kind": metrics["model"].get("kind", metrics["model"].get("name")),
               "customers": int(len(customers)), "products": int(metrics["data"]["catalogue"]),
               "ndcg_at_10": metrics["model"].get("ndcg_at_10")}
    result["model"] = model_seconds(out, customers, args.k)      # the served class in-process: EASE against the re-ranker
    print(json.dumps(result["model"]), flush=True)

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
