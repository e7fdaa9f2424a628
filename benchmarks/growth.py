"""Growth of the heavy data-dependent steps: wall time, CPU time and peak memory at a few small scales of today's data,
the growth exponent b of each (time ~ a * n^b, fitted on log-log), and the projection to 1x, 10x and 100x today.

Each step runs in a fresh child process (`python benchmarks/growth.py --child STEP SCALE FOLDER`) that loads its
inputs (the parquet files an earlier step wrote into FOLDER, not timed), records its resident memory, calls the same
library function the pipeline task calls, and reports the call's wall time, its CPU time (process_time: all threads)
and the process's peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss, Linux KiB). Memory is fitted on the peak
above the process's memory after its imports (the data-dependent part: the inputs and the step's own arrays) and
projected as that base plus the fitted growth. The steps and what "today" means (env.yaml's defaults):

  service-data        simulate_service_data (get-service-data): 6,000 customers, 9 drivers, 730 days, ~10M pings;
                      scaled by days (the rows grow alike with days and drivers)
  clean-geofences     clean_pings + detect_visits (clean-geofences) on those pings
  service-features    build_service_features (build-service-features)
  lightgbm-fit        fit_lightgbm on the features (one fit of train-service-time: a tuning trial costs about the same;
                      fixed parameters, --lgb-rounds rounds on --lgb-threads threads)
  demand-data         simulate_transactions + check_transactions + clean_transactions (get-demand-data): 1,095 days,
                      200 invoices a day; scaled by invoices a day (volume, the same days)
  daily-revenue       daily_revenue + region_daily (build-daily-revenue)
  demand-backtest     run_backtest with the lightgbm candidate alone on --backtest-folds folds, one process: the daily
                      series has one row a day whatever the volume, so it runs once (at the smallest volume)
  ease-fit            ease_weights (train-recommendations' EASE) on a random purchase matrix of 20,000 customers and
                      400 x scale products (it grows with products, not customers)
  returns-epoch       train_classifier for one epoch on N Fashion-MNIST images (train-returns: 2,500 images x 10 epochs)
  returns-batch       run_batch on N PNG photos with an untrained EfficientNet (classify-returns: 400 photos)

    nice -n 19 .venv/bin/python benchmarks/growth.py                      # every step, default scales
    nice -n 19 .venv/bin/python benchmarks/growth.py --steps ease-fit,returns-batch

Writes benchmarks/results/growth.json (with the load average at the start and the end of the run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, write_result  # noqa: E402

TODAY = {"service_days": 730, "invoices_per_day": 200, "n_products": 400, "train_images": 2500, "inbox_images": 400}
SERVICE = dict(n_customers=6000, n_drivers=9, start="2024-01-01", stops_per_route=11.0, ping_interval_s=5.0)
LGB_PARAMS = {"objective": "l1", "learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 20, "feature_fraction": 0.9,
              "bagging_fraction": 0.9, "bagging_freq": 1, "lambda_l2": 1.0, "cat_smooth": 10.0}
# step -> (family, the pipeline task, what n is, today's n)
STEPS = {
    "service-data": ("service_time", "get-service-data", "days of pings (9 drivers)", TODAY["service_days"]),
    "clean-geofences": ("service_time", "clean-geofences", "days of pings (9 drivers)", TODAY["service_days"]),
    "service-features": ("service_time", "build-service-features", "days of stops (9 drivers)", TODAY["service_days"]),
    "lightgbm-fit": ("service_time", "train-service-time", "days of stops (9 drivers)", TODAY["service_days"]),
    "demand-data": ("demand", "get-demand-data", "invoices a day (1,095 days)", TODAY["invoices_per_day"]),
    "daily-revenue": ("demand", "build-daily-revenue", "invoices a day (1,095 days)", TODAY["invoices_per_day"]),
    "demand-backtest": ("demand", "backtest-demand", "invoices a day (1,095 days)", TODAY["invoices_per_day"]),
    "ease-fit": ("recommendations", "train-recommendations", "products", TODAY["n_products"]),
    "returns-epoch": ("returns", "train-returns", "training images (one epoch)", TODAY["train_images"]),
    "returns-batch": ("returns", "classify-returns", "inbox photos", TODAY["inbox_images"]),
}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(step: str, scale: float, folder: Path, args: dict) -> dict:
    "Run one step at `scale` of today in this process; the call's seconds, CPU seconds, rows and memory."
    import numpy as np
    import pandas as pd
    info: dict = {}
    if step == "service-data":
        from kronkers_ml.service_time.generator import simulate_service_data
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        days = max(1, round(TODAY["service_days"] * scale))
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        tables = simulate_service_data(days=days, seed=0, progress=False, **SERVICE)
        w, c = time.perf_counter() - w, time.process_time() - c
        for name in ("pings", "stops", "customers"):
            tables[name].to_parquet(folder / f"{name}.parquet", index=False)
        info = {"n": days, "rows": len(tables["pings"]), "rows_of": "pings"}
    elif step == "clean-geofences":
        from kronkers_ml.service_time.geofence import clean_pings, detect_visits
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        pings, stops, customers = (pd.read_parquet(folder / f"{n}.parquet") for n in ("pings", "stops", "customers"))
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        visits = detect_visits(clean_pings(pings), stops, customers, progress=False)
        w, c = time.perf_counter() - w, time.process_time() - c
        visits.attrs.pop("diagnostics", None)
        visits.to_parquet(folder / "visits.parquet", index=False)
        info = {"n": round(TODAY["service_days"] * scale), "rows": len(pings), "rows_of": "pings"}
    elif step == "service-features":
        from kronkers_ml.service_time.features import build_service_features
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        stops, customers, visits = (pd.read_parquet(folder / f"{n}.parquet") for n in ("stops", "customers", "visits"))
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        features = build_service_features(stops, customers, visits)
        w, c = time.perf_counter() - w, time.process_time() - c
        features.to_parquet(folder / "features.parquet", index=False)
        info = {"n": round(TODAY["service_days"] * scale), "rows": len(features), "rows_of": "feature rows (stops)"}
    elif step == "lightgbm-fit":
        from kronkers_ml.service_time.model import base_lgb_params, fit_lightgbm
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        features = pd.read_parquet(folder / "features.parquet")
        params = {**base_lgb_params(0, num_threads=args["lgb_threads"]), **LGB_PARAMS}
        fit_lightgbm(features.head(200), params, 2, seed=0)          # warm-up: first-call costs are not the data's
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        fit_lightgbm(features, params, args["lgb_rounds"], seed=0)
        w, c = time.perf_counter() - w, time.process_time() - c
        info = {"n": round(TODAY["service_days"] * scale), "rows": len(features), "rows_of": "feature rows",
                "rounds": args["lgb_rounds"], "threads": args["lgb_threads"]}
    elif step == "demand-data":
        from kronkers_ml.demand.data import check_transactions, clean_transactions
        from kronkers_ml.demand.generator import simulate_transactions
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        ipd = TODAY["invoices_per_day"] * scale
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        log = check_transactions(simulate_transactions(invoices_per_day=ipd, seed=0), "generated log")
        lines, _ = clean_transactions(log)
        w, c = time.perf_counter() - w, time.process_time() - c
        lines.to_parquet(folder / "lines.parquet", index=False)
        info = {"n": ipd, "rows": len(log), "rows_of": "transaction lines"}
    elif step == "daily-revenue":
        from kronkers_ml.demand.series import daily_revenue, region_daily
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        lines = pd.read_parquet(folder / "lines.parquet")
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        daily = daily_revenue(lines, country="NO")
        region_daily(lines)
        w, c = time.perf_counter() - w, time.process_time() - c
        daily.to_parquet(folder / "daily.parquet", index=False)
        info = {"n": TODAY["invoices_per_day"] * scale, "rows": len(lines), "rows_of": "transaction lines",
                "daily_rows": len(daily)}
    elif step == "demand-backtest":
        from kronkers_ml.demand.backtest import rolling_origins, run_backtest
        from kronkers_ml.demand.models import with_closures
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        daily = with_closures(pd.read_parquet(folder / "daily.parquet"))
        origins = rolling_origins(daily.date.max(), args["backtest_folds"], 28, 28)
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        run_backtest(daily, origins, 28, {"lightgbm": {"seed": 0, "horizon": 28}}, n_jobs=1)
        w, c = time.perf_counter() - w, time.process_time() - c
        info = {"n": TODAY["invoices_per_day"] * scale, "rows": len(daily), "rows_of": "days", "folds": len(origins)}
    elif step == "ease-fit":
        import scipy.sparse as sp
        from kronkers_ml.recommendations.models import ease_weights
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        n_items = round(TODAY["n_products"] * scale)
        rng = np.random.default_rng(0)
        n_cust, per = 20_000, 20                    # about 20 distinct products a customer
        rows = np.repeat(np.arange(n_cust), per)
        cols = rng.integers(0, n_items, size=rows.size)
        bought = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_cust, n_items))
        bought.data[:] = 1.0
        rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
        ease_weights(bought, 200.0)
        w, c = time.perf_counter() - w, time.process_time() - c
        info = {"n": n_items, "rows": n_items, "rows_of": "products", "customers": n_cust}
    elif step in ("returns-epoch", "returns-batch"):
        import torch
        from kronkers_ml.returns.data import load_fashion_mnist, write_inbox
        from kronkers_ml.returns.model import build_classifier
        rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
        torch.set_num_threads(2)
        n = max(1, round(TODAY["train_images" if step == "returns-epoch" else "inbox_images"] * scale))
        images, labels = load_fashion_mnist(args["fashion_mnist"], "t10k")
        keep = np.isin(labels, np.unique(labels)[:5])
        images, labels = images[keep][:n], labels[keep][:n]
        labels = np.searchsorted(np.unique(labels), labels)
        net = build_classifier("efficientnet_lite0", n_classes=5, pretrained=False, seed=0)
        if step == "returns-epoch":
            from kronkers_ml.returns.model import train_classifier
            rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
            warm = build_classifier("efficientnet_lite0", n_classes=5, pretrained=False, seed=1)   # warm-up: first-call
            train_classifier(warm, images[:64], labels[:64], 96, epochs=1, batch_size=64, seed=1, threads=2,  # costs
                             progress=False, max_steps=2)                                         # are not the data's
            del warm
            rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
            train_classifier(net, images, labels, 96, epochs=1, batch_size=64, seed=0, threads=2, progress=False)
            w, c = time.perf_counter() - w, time.process_time() - c
        else:
            from kronkers_ml.returns.batch import run_batch
            from kronkers_ml.returns.model import load_classifier, save_classifier
            rss_imports = _rss_mb()    # the libraries loaded: what follows is the data's
            write_inbox(folder / f"inbox{n}", images, n, seed=0)
            save_classifier(net, folder / "model.pt", image_size=96)
            model = load_classifier(folder / "model.pt")
            write_inbox(folder / "warmup", images, 2, seed=1)       # warm-up: first-call costs are not the data's
            run_batch(folder / "warmup", folder / "warmup.jsonl", model, batch_size=10)
            rss_before = _rss_mb(); w, c = time.perf_counter(), time.process_time()
            run_batch(folder / f"inbox{n}", folder / f"results{n}.jsonl", model, batch_size=10)
            w, c = time.perf_counter() - w, time.process_time() - c
        info = {"n": n, "rows": n, "rows_of": "images"}
    else:
        raise SystemExit(f"unknown step {step!r}; known: {', '.join(STEPS)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": step, "scale": scale, **info, "wall_s": round(w, 3), "cpu_s": round(c, 3),
            "rss_imports_mb": round(rss_imports, 1), "rss_inputs_mb": round(rss_before, 1), "peak_rss_mb": round(peak, 1)}


def fit_power(xs, ys) -> dict:
    "Least squares of log y = log a + b log x; {'a', 'b'} (b None with fewer than 2 positive points)."
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return {"a": None, "b": None}
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
    return {"a": math.exp(my - b * mx), "b": b}


def project(runs: list[dict], targets=(1, 10, 100)) -> dict:
    "Fitted exponents of wall, CPU and memory against the scale, and their values at `targets` x today."
    xs = [r["scale"] for r in runs]
    out = {}
    for key in ("wall_s", "cpu_s"):
        f = fit_power(xs, [r[key] for r in runs])
        out[f"{key}_exponent"] = None if f["b"] is None else round(f["b"], 3)
        out[key] = {f"{t}x": (None if f["b"] is None else round(f["a"] * t ** f["b"], 2)) for t in targets}
    base = min(r["rss_imports_mb"] for r in runs)
    f = fit_power(xs, [r["peak_rss_mb"] - r["rss_imports_mb"] for r in runs])
    out["memory_exponent"] = None if f["b"] is None else round(f["b"], 3)
    out["peak_rss_mb"] = {f"{t}x": (None if f["b"] is None else round(base + f["a"] * t ** f["b"], 1)) for t in targets}
    out["base_rss_mb"] = base
    # fixed costs (start-up, small-input overheads) flatten the fit at small scales: a step that is at least linear in
    # its input is bounded below by the largest run scaled linearly, which is reported beside the fit
    big = max(runs, key=lambda r: r["scale"])
    out["linear_from_largest"] = {
        "wall_s": {f"{t}x": round(big["wall_s"] * t / big["scale"], 2) for t in targets},
        "peak_rss_mb": {f"{t}x": round(base + (big["peak_rss_mb"] - big["rss_imports_mb"]) * t / big["scale"], 1)
                        for t in targets}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps (default: all): " + ", ".join(STEPS))
    p.add_argument("--scales", default="0.125,0.25,0.5",
                   help="scales of today's data for the service-time steps (default 1/8, 1/4, 1/2 of 730 days)")
    p.add_argument("--demand-scales", default="0.125,0.25,0.5", help="scales of today's invoices a day (default 1/8..1/2)")
    p.add_argument("--ease-scales", default="2,4,8", help="multiples of today's 400 products for EASE (default 2, 4, 8)")
    p.add_argument("--returns-scales", default="0.0256,0.0512,0.1024",
                   help="scales of today's training images (2,500: 64, 128, 256 by default) and inbox photos (400)")
    p.add_argument("--batch-scales", default="0.125,0.25,0.5",
                   help="scales of today's inbox photos (400) for the batch job (default 1/8..1/2)")
    p.add_argument("--lgb-rounds", type=int, default=300, help="boosting rounds of the LightGBM fit (default 300)")
    p.add_argument("--lgb-threads", type=int, default=2, help="LightGBM threads (default 2, as the pipeline)")
    p.add_argument("--backtest-folds", type=int, default=4, help="folds of the demand backtest (the task runs 12)")
    p.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST folder")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "growth.json"), help="result JSON")
    p.add_argument("--child", nargs=3, metavar=("STEP", "SCALE", "FOLDER"), help=argparse.SUPPRESS)
    p.add_argument("--child-args", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        step, scale, folder = args.child
        print(json.dumps(child(step, float(scale), Path(folder), json.loads(args.child_args))))
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        p.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    child_args = json.dumps({"lgb_rounds": args.lgb_rounds, "lgb_threads": args.lgb_threads, "backtest_folds": args.backtest_folds,
                             "fashion_mnist": args.fashion_mnist})
    scales = {"service_time": [float(s) for s in args.scales.split(",")],
              "demand": [float(s) for s in args.demand_scales.split(",")],
              "recommendations": [float(s) for s in args.ease_scales.split(",")],
              "returns": [float(s) for s in args.returns_scales.split(",")],
              "returns-batch": [float(s) for s in args.batch_scales.split(",")]}
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = {"benchmark": "growth", "machine": machine_info(), "load_average_start": list(os.getloadavg()),
              "memory_total_mb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20),
              "today": TODAY, "lgb_rounds": args.lgb_rounds, "lgb_threads": args.lgb_threads, "backtest_folds": args.backtest_folds,
              "runs": [], "steps": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kronkers-growth-") as tmp:
        order = [s for s in STEPS if s in steps]
        for step in order:
            family, task, unit, today_n = STEPS[step]
            step_scales = (scales[family][:1] if step == "demand-backtest" else
                           scales["returns-batch"] if step == "returns-batch" else scales[family])
            runs = []
            for scale in step_scales:
                folder = Path(tmp) / f"{family}-{scale:g}"
                folder.mkdir(exist_ok=True)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run([sys.executable, __file__, "--child", step, repr(scale), str(folder),
                                       "--child-args", child_args], cwd=ROOT, env=env, capture_output=True, text=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode:
                    sys.exit(f"{step} at scale {scale:g} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                run["child_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
                run["load_average"] = list(os.getloadavg())
                runs.append(run)
                result["runs"].append(run)
                print(f"{step:17s} scale {scale:<8g} n {run['n']:<8g} {run['rows']:>10,} {run['rows_of']}: "
                      f"{run['wall_s']:8.2f} s wall, {run['cpu_s']:8.2f} s CPU, peak {run['peak_rss_mb']:8.1f} MB "
                      f"(after imports {run['rss_imports_mb']:.0f} MB)", flush=True)
            result["steps"][step] = {"family": family, "task": task, "n_is": unit, "today_n": today_n,
                                     **({"note": "one row a day whatever the volume: constant in volume"}
                                        if step == "demand-backtest" else project(runs))}
    result["load_average_end"] = list(os.getloadavg())
    result["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    path = write_result(result, args.out)
    for step, s in result["steps"].items():
        if "wall_s_exponent" in s:
            print(f"{step:17s} time ~ n^{s['wall_s_exponent']} (CPU n^{s['cpu_s_exponent']}), memory ~ n^{s['memory_exponent']}: "
                  f"10x {s['wall_s']['10x']} s, {s['peak_rss_mb']['10x']} MB; 100x {s['wall_s']['100x']} s, "
                  f"{s['peak_rss_mb']['100x']} MB")
    print(f"wrote {path}; load average {result['load_average_start']} -> {result['load_average_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
