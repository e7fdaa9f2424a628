"""Bad input against the returns batch job and the model service: peak memory and time for a decompression-bomb PNG
(12000x12000 black pixels in about 140 KB, under Pillow's own bomb limit) classified by the batch job and uploaded
to `POST /v1/models/returns/classify`, and a 300 MB body sent with an invalid key. Each process is a real one: the
batch job's peak RSS is its maximum resident set (`resource.getrusage` of the finished child), the service's is
sampled every 5 ms with psutil while the request runs, against its RSS before the request.

    .venv/bin/python benchmarks/bad_inputs.py                        # this checkout
    .venv/bin/python benchmarks/bad_inputs.py --source OTHER_CHECKOUT --label main   # another checkout's code

`--source` runs the job and the service from another checkout of the repository (e.g. `git archive main | tar -x -C
DIR`), so the figures before and after a change come from the same script. Writes
benchmarks/results/bad_inputs_<label>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from common import free_port, machine_info, write_result  # noqa: E402
from conftest import bomb_png  # noqa: E402  (the tests' bomb: one builder for both)


def small_png() -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO(); Image.new("L", (28, 28), 128).save(buf, format="PNG"); return buf.getvalue()


def child_env(source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1", "MLFLOW_LOGGING_LEVEL": "ERROR"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def batch_run(source: Path, inbox: Path, results: Path, model: Path) -> dict:
    "One run of the batch job's main() from `source` on `inbox`: wall seconds, peak RSS (MB), the summary."
    summary = results.with_suffix(".json")
    code = ("import resource, sys\nfrom kronkers_ml.returns.batch import main\ncode = main(sys.argv[1:])\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\nsys.exit(code)")
    cmd = [sys.executable, "-c", code, "--input", str(inbox), "--output", str(results), "--model", str(model),
           "--no-progress", "--summary-json", str(summary)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=child_env(source), capture_output=True, text=True, cwd=source, timeout=1800)
    seconds = time.perf_counter() - t0
    rss = next((int(l.split()[1]) / 1024 for l in done.stdout.splitlines() if l.startswith("MAXRSS")), None)
    out = {"returncode": done.returncode, "seconds": seconds, "peak_rss_mb": rss,
           "stderr_tail": done.stderr[-600:]}
    if summary.exists():
        s = json.loads(summary.read_text())
        out.update(batch_seconds=s["batch_seconds"], processed=s["processed"], errors=s["errors"])
        import csv
        with open(results, newline="") as f: out["rows"] = [r for r in csv.DictReader(f)]
    return out


def make_store(out: Path, model: Path) -> str:
    "An MLflow store in `out`: `returns` champion `model`, `service-time` champion a booster on random rows (this checkout's registry code)."
    from kronkers_ml.platform.registry import register_version, set_champion
    from kronkers_ml.returns.family import log_returns_model
    from kronkers_ml.platform.tracking import artifact_root, log_training_run, use_store
    uri = f"sqlite:///{out}/mlflow/mlflow.db"
    use_store(uri, "returns", artifact_root(out))
    metrics = {"family": "returns", "primary_metric": "accuracy", "model": {"accuracy": 0.2}, "baselines": {},
               "data": {"rows_train": 1, "rows_test": 1, "sha256": "x"}}
    run = log_training_run("returns", {"seed": 0}, metrics, lambda: log_returns_model(model))
    set_champion(uri, "returns", register_version(uri, "returns", run["model_uri"], run["run_id"]), "bench", "bench")
    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    from kronkers_ml.service_time.data import ZONES
    from kronkers_ml.service_time.family import log_service_time_model
    from kronkers_ml.service_time.model import save_model
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"n_items": rng.integers(1, 20, 200).astype(float),
                          "zone": pd.Categorical(rng.choice(list(ZONES), 200), categories=list(ZONES))})
    booster = lgb.train({"objective": "l2", "verbose": -1, "seed": 0, "min_data_in_leaf": 5},
                        lgb.Dataset(frame, 100 + 10 * frame.n_items), 10)
    save_model(booster, out / "st" / "model.txt")
    use_store(uri, "service-time", artifact_root(out))
    run = log_training_run("service-time", {"seed": 0}, {**metrics, "family": "service-time", "primary_metric": "mae_s",
                                                         "model": {"mae_s": 1.0}},
                           lambda: log_service_time_model(out / "st" / "model.txt"))
    set_champion(uri, "service-time", register_version(uri, "service-time", run["model_uri"], run["run_id"]), "bench", "bench")
    return uri



class Peak:
    "Samples a process's RSS every 5 ms in a thread; `.peak_mb` after `stop()`."
    def __init__(self, pid: int):
        import psutil
        self.proc, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True); self.thread.start()
    def run(self):
        while not self.done.is_set():
            try: self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception: return
            time.sleep(0.005)
    def stop(self) -> float:
        self.done.set(); self.thread.join(); return self.peak / 2**20


def service_runs(source: Path, folder: Path, uri: str) -> dict:
    "Start the service from `source` serving `returns`; time and peak memory of a bomb upload and a 300 MB bad-key body."
    import httpx
    import psutil
    from kronkers_ml.platform.access import create_key, load_roles
    roles = ROOT / "config" / "roles.yaml"
    keys = folder / "service" / "keys.json"
    key = create_key(keys, "operations", load_roles(roles), "bench")[1]
    port = free_port()
    env = {**child_env(source), "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-c", "import sys\nfrom kronkers_ml.cli import main\nsys.exit(main(sys.argv[1:]))", "serve",
           "--port", str(port), "--out", str(folder), "--roles", str(roles), "--keys", str(keys),
           "--audit-log", str(folder / "service" / "audit.jsonl"), "--models", "service-time,returns"]
    log = open(folder / "service.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=source, stdout=log, stderr=subprocess.STDOUT)
    base, out = f"http://127.0.0.1:{port}", {}
    try:
        for _ in range(3000):
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200: break
            except httpx.TransportError: pass
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=600) as c:
            c.post("/v1/models/returns/classify", files=[("files", ("warm.png", small_png(), "image/png"))],
                   headers={"X-API-Key": key})
            bomb = bomb_png()
            before = psutil.Process(proc.pid).memory_info().rss / 2**20
            peak = Peak(proc.pid); t0 = time.perf_counter()
            r = c.post("/v1/models/returns/classify", files=[("files", ("bomb.png", bomb, "image/png"))],
                       headers={"X-API-Key": key})
            out["bomb_upload"] = {"status": r.status_code, "seconds": time.perf_counter() - t0, "rss_before_mb": before,
                                  "peak_rss_mb": peak.stop(), "detail": r.text[:300]}
            before = psutil.Process(proc.pid).memory_info().rss / 2**20
            peak = Peak(proc.pid); t0 = time.perf_counter()
            def body():
                block = b"{" * (1 << 20)
                for _ in range(300): yield block
            try:
                r = c.post("/v1/models/service-time/predict", content=body(),
                           headers={"X-API-Key": "kk_000000000000_not-a-real-key", "Content-Type": "application/json",
                                    "Content-Length": str(300 << 20)})
                status, detail = r.status_code, r.text[:200]
            except httpx.HTTPError as e:
                status, detail = type(e).__name__, str(e)[:200]
            out["bad_key_300mb_body"] = {"status": status, "seconds": time.perf_counter() - t0, "rss_before_mb": before,
                                         "peak_rss_mb": peak.stop(), "detail": detail,
                                         "note": "the client sends all 300 MB before it reads the answer"}
            # the answer to 300 MB announced and 1 MB sent: how long the server waits before it says 401
            t0 = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:   # a service that reads it all: no answer
                s.sendall(b"POST /v1/models/service-time/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"X-API-Key: kk_000000000000_not-a-real-key\r\nContent-Length: 314572800\r\n\r\n" + b"{" * (1 << 20))
                try: first = s.recv(200).split(b"\r\n")[0].decode()
                except socket.timeout: first = "no answer within 60 s"
            out["bad_key_300mb_announced_1mb_sent"] = {"answer": first, "seconds_to_answer": time.perf_counter() - t0}
    finally:
        proc.terminate(); proc.wait(timeout=60); log.close()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(ROOT), help="checkout whose job and service are measured (default: this one)")
    p.add_argument("--label", default="this", help="name of the result file's suffix (default: %(default)s)")
    p.add_argument("--skip-service", action="store_true", help="measure only the batch job")
    p.add_argument("--skip-batch", action="store_true", help="measure only the service")
    p.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/bad_inputs_<label>.json)")
    args = p.parse_args(argv)
    source = Path(args.source).resolve()
    from kronkers_ml.returns.model import CATEGORIES, build_classifier, save_classifier
    result = {"benchmark": "bad_inputs", "machine": machine_info(), "label": args.label, "bomb_png_bytes": len(bomb_png())}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model = d / "model" / "model.pt"; model.parent.mkdir()
        save_classifier(build_classifier("efficientnet_lite0", n_classes=len(CATEGORIES), pretrained=False), model, image_size=96)
        for case, data in () if args.skip_batch else (("one_photo", small_png()), ("bomb", bomb_png())):
            inbox = d / case; inbox.mkdir()
            (inbox / f"{case}.png").write_bytes(data)
            result[f"batch_{case}"] = r = batch_run(source, inbox, d / f"{case}.csv", model)
            print(f"batch job, {case}: exit {r['returncode']}, {r['seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MB, "
                  f"batch {r.get('batch_seconds')}", flush=True)
        if not args.skip_service:
            uri = make_store(d / "outputs", model)
            result["service"] = s = service_runs(source, d / "outputs", uri)
            print(json.dumps(s, indent=1), flush=True)
    path = write_result(result, args.out or ROOT / "benchmarks" / "results" / f"bad_inputs_{args.label}.json")
    print(f"-> {path}")
    return result


if __name__ == "__main__":
    main()
