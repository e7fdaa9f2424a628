"""Time from upload to result on the "try it" pages: 1 and 20 photos, a 500-stop CSV, a route picked from the data, a 90-day forecast, a customer's products.

Runs what a page runs when the reader presses its button, without the browser: the same library functions
(`classify_photos` + the results table and CSV; `predict_stops` + `route_totals` + table and CSV;
`forecast_from_service` + table, chart and CSV; `predict_route` + totals, table and CSV for the newest day's longest
route; `recommend_from_service` + the products' facts, table and CSV for the most active customer and for a new one)
against a real `kronkers serve` on 127.0.0.1, with a key of the role that may. The service serves the champions of a
copy of the build's registry (the build's returns classifier and recommender are made champion in the copy when the
gate rejected them, as the tiny build's classifier usually is). Photos are held-out test
photos of the build, either as they are (small PNGs) or enlarged to 4032 x 3024 JPEGs as a phone takes them (the
page shrinks those before sending). The 500 stops are feature rows of the build, in 25-stop routes.

Needs a build (`make build`, or `--out outputs-test` after the tiny run). Writes benchmarks/results/tryit.json and
prints it.
"""
from __future__ import annotations

import argparse
import json
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, machine_info, write_result  # noqa: E402

BIN = Path(sys.executable).parent


def start_service(out: Path, home: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    "`kronkers serve` on a copy of the registry of `out`, keys of operations, procurement and marketing; (process, url, keys)."
    from kronkers_ml.platform.access import create_key, load_roles
    from kronkers_ml.platform.registry import champion_version, history, set_champion
    (home / "mlflow").mkdir(parents=True)
    shutil.copy2(out / "mlflow" / "mlflow.db", home / "mlflow" / "mlflow.db")
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    for model in ("returns", "recommendations"):
        if champion_version(uri, model) is None:
            set_champion(uri, model, str(history(uri, model).iloc[0].version), "benchmark", "a served model to time")
    roles = load_roles(ROOT / "config" / "roles.yaml")
    keys = {r: create_key(home / "service" / "keys.json", r, roles, f"benchmark {r}")[1] for r in ("operations", "procurement", "marketing")}
    port = free_port()
    log = open(home / "service.log", "w")
    proc = subprocess.Popen([str(BIN / "kronkers"), "serve", "--port", str(port), "--out", str(home),
                             "--roles", str(ROOT / "config" / "roles.yaml"), "--state-dir", str(home / "service")],
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200: break
        except httpx.TransportError: pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the service did not start: {(home / 'service.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, url, keys


def photos(out: Path, n: int, phone: bool) -> list[tuple[str, bytes]]:
    "n held-out photos of the build: PNG as they are, or JPEG enlarged to 4032 x 3024 (`phone`)."
    from PIL import Image
    from kronkers_ml.returns.family import returns_heldout
    held = returns_heldout(out / "returns" / "test.npz")
    files = []
    for i in range(n):
        im, buf = Image.fromarray(held.images[i % len(held)]), io.BytesIO()
        if phone: im.convert("RGB").resize((4032, 3024)).save(buf, format="JPEG", quality=90)
        else: im.save(buf, format="PNG")
        files.append((f"return_{i:03d}.{'jpg' if phone else 'png'}", buf.getvalue()))
    return files


def stops_csv(out: Path, n: int, per_route: int = 25) -> bytes:
    "n feature rows of the build as a stops CSV, `per_route` stops per route."
    from kronkers_ml.service_time.features import FEATURES
    rows = pd.read_parquet(out / "service_time" / "features.parquet").head(n)
    return rows.assign(route_id=[f"R{i // per_route + 1}" for i in range(len(rows))])[["route_id", "stop_id", *FEATURES]].to_csv(index=False).encode()


def timed(fn, repeats: int) -> dict:
    "Seconds of each of `repeats` calls of `fn` (the first separately: the service's first request of that kind)."
    runs = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter(); fn(); runs.append(time.perf_counter() - t0)
    return {"first_s": round(runs[0], 3), "median_s": round(median(runs[1:]), 3), "min_s": round(min(runs[1:]), 3),
            "max_s": round(max(runs[1:]), 3), "repeats": repeats}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs", help="build outputs folder (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case after the first (default: %(default)s)")
    p.add_argument("--stops", type=int, default=500, help="stops in the CSV (default: %(default)s)")
    p.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "tryit.json"))
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from kronkers_ml.demand.family import demand_csv, demand_results_html, forecast_from_service, plot_forecast
    from kronkers_ml.returns.family import classify_photos, returns_csv, returns_results_html
    from kronkers_ml.recommendations.tryit import (example_customers, product_catalogue, recommend_from_service,
                                                   recommendations_csv, recommendations_results_html, recommendations_table)
    from kronkers_ml.service_time.family import (predict_route, predict_stops, route_totals, service_time_csv,
                                                 service_time_results_html, stop_rows)

    home = Path(tempfile.mkdtemp(prefix="tryit-bench-"))
    proc, url, keys = start_service(out, home)
    try:
        def returns_page(files):
            def run():
                res = classify_photos(files, keys["operations"], url)
                returns_results_html(res); returns_csv(res)
                assert len(res) == len(files)
            return run

        csv = stops_csv(out, a.stops)
        def service_time_page():
            pred = predict_stops("stops.csv", csv, keys["operations"], url)
            service_time_results_html(pred, route_totals(pred)); service_time_csv(pred)
            assert len(pred) == a.stops

        rows = stop_rows(out)                      # read once, when the page's form is drawn
        day = rows["date"].max()
        route = rows[rows["date"] == day]["route_id"].value_counts().sort_index().idxmax()
        def route_page():
            pred = predict_route(rows, day, route, keys["operations"], url)
            service_time_results_html(pred, route_totals(pred)); service_time_csv(pred)

        catalogue = product_catalogue(out)         # read once, when the page's form is drawn
        customer = str(example_customers(out).customer_id.iloc[0])
        def recommendations_page(customer_id, k=10):
            def run():
                table = recommendations_table(recommend_from_service(customer_id, k, keys["marketing"], url), catalogue)
                recommendations_results_html(table); recommendations_csv(table)
                assert len(table) == k
            return run

        daily = pd.read_parquet(out / "demand" / "daily.parquet", columns=["date", "revenue"])
        def demand_page():
            fc = forecast_from_service(90, keys["procurement"], url)
            demand_results_html(fc); demand_csv(fc)
            ax = plot_forecast(daily, fc, len(fc)); ax.figure.savefig(io.BytesIO(), format="png"); plt.close(ax.figure)

        cases = {}
        for n in (1, 20):
            for phone in (False, True):
                files = photos(out, n, phone)
                cases[f"returns_{n}_{'phone_jpeg_4032x3024' if phone else 'heldout_png'}"] = {
                    "photos": n, "upload_bytes": sum(len(d) for _, d in files), **timed(returns_page(files), a.repeats)}
        cases[f"service_time_{a.stops}_stops"] = {"stops": a.stops, "upload_bytes": len(csv), **timed(service_time_page, a.repeats)}
        cases["service_time_route_picked"] = {"stops": int(((rows["date"] == day) & (rows["route_id"] == route)).sum()),
                                              **timed(route_page, a.repeats)}
        cases["demand_90_days"] = {"horizon": 90, **timed(demand_page, a.repeats)}
        cases["recommendations_10_known_customer"] = {"k": 10, **timed(recommendations_page(customer), a.repeats)}
        cases["recommendations_10_new_customer"] = {"k": 10, **timed(recommendations_page("K-NEW-0001"), a.repeats)}
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()
        shutil.rmtree(home, ignore_errors=True)
    result = {"benchmark": "tryit", "outputs": str(a.out), "what": "seconds from the button to the page's table and CSV, "
              "through the model service on 127.0.0.1 (no browser)", "cases": cases, "load_average": os.getloadavg(),
              "machine": machine_info()}
    write_result(result, a.result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
