"""How often the basket drift test of recommendations alarms on undrifted data, and whether it catches a shifted mix,
over every window of a build's transaction log.

    .venv/bin/python benchmarks/recommendations_drift_windows.py --out outputs               # a built default run
    .venv/bin/python benchmarks/recommendations_drift_windows.py --out outputs-test --env-file env.test.yaml

For each `--window-days` window of the build's clean lines (`demand.transactions`) that has the repeat days and the
reference days of history before it, the baskets of the window (`basket_features`, the settings the build's reference
profile was taken with) are compared with the baskets of the reference days just before it by the monitor's own test
(whylogs profiles, `drift_scores` and `flag_drift` at the env file's `monitoring.drift_p_value`): once as they are
(undrifted: any alarm is a false alarm) and once with `--share` of the window's invoices given to customers never seen
before (`new_customer_baskets`: a drift the test should catch). Writes benchmarks/results/recommendations_drift_windows.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import pandas as pd  # noqa: E402
from common import machine_info, write_result  # noqa: E402

from kronkers_ml.core import read_json  # noqa: E402
from kronkers_ml.monitoring.drift import drift_scores, flag_drift  # noqa: E402
from kronkers_ml.monitoring.monitor import read_env  # noqa: E402
from kronkers_ml.products import product_path  # noqa: E402
from kronkers_ml.recommendations.monitor import BASKET_COLUMNS, basket_features, new_customer_baskets  # noqa: E402


def judged(reference: pd.DataFrame, current: pd.DataFrame, p_value: float) -> dict:
    "The monitor's drift test of `current` baskets against `reference` baskets: drifted columns and the smallest p-value."
    import whylogs as why
    view = lambda f: why.log(pandas=f[list(BASKET_COLUMNS)]).view()
    flags = flag_drift(drift_scores(view(current), view(reference), list(BASKET_COLUMNS)), p_value)
    return {"drifted": sorted(flags.index[flags["drifted"].astype(bool)]), "min_pvalue": float(flags["pvalue"].min()),
            "baskets": len(current)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="a build's outputs folder (with demand.transactions and the recommendations profiles)")
    ap.add_argument("--env-file", default="env.yaml", help="the env file whose monitoring.drift_p_value is used (default env.yaml)")
    ap.add_argument("--window-days", type=int, default=28, help="days of each window (default 28)")
    ap.add_argument("--share", type=float, default=0.3, help="shifted mix: share of the window's invoices given to new customers")
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "recommendations_drift_windows.json"))
    args = ap.parse_args(argv)
    p_value = float(read_env(args.env_file)["monitoring"]["drift_p_value"])
    spec = read_json(product_path("profiles.recommendations.index", args.out))["settings"]
    repeat_days, new_days, reference_days = int(spec["repeat_days"]), int(spec["new_days"]), int(spec["reference_days"])
    t0 = time.perf_counter()
    lines = pd.read_parquet(product_path("demand.transactions", args.out))
    baskets = basket_features(lines, repeat_days, new_days)
    step = pd.Timedelta(days=args.window_days)
    cut, last = baskets["date"].min() + pd.Timedelta(days=repeat_days + reference_days), baskets["date"].max()
    windows = []
    while cut + step <= last + pd.Timedelta(days=1):
        reference = baskets[(baskets["date"] < cut) & (baskets["date"] >= cut - pd.Timedelta(days=reference_days))]
        current = baskets[(baskets["date"] >= cut) & (baskets["date"] < cut + step)]
        inside = lines[(lines["date"] >= cut) & (lines["date"] < cut + step)]
        moved = basket_features(pd.concat([lines[lines["date"] < cut], new_customer_baskets(inside, args.share, seed=0)]),
                                repeat_days, new_days)
        windows.append({"from": f"{cut:%Y-%m-%d}", "to": f"{cut + step - pd.Timedelta(days=1):%Y-%m-%d}",
                        "undrifted": judged(reference, current, p_value),
                        "shifted": judged(reference, moved[moved["date"] >= cut], p_value)})
        print(f"{windows[-1]['from']}: undrifted {windows[-1]['undrifted']['drifted'] or 'no alarm'}, "
              f"shifted {windows[-1]['shifted']['drifted'] or 'MISSED'}")
        cut += step
    false_alarms = [w["from"] for w in windows if w["undrifted"]["drifted"]]
    caught = sum(bool(w["shifted"]["drifted"]) for w in windows)
    result = {"out": str(args.out), "p_value": p_value, "window_days": args.window_days, "share": args.share,
              "settings": spec, "windows": windows, "false_alarms": false_alarms, "shifted_caught": caught,
              "seconds": round(time.perf_counter() - t0, 1), "machine": machine_info()}
    path = write_result(result, args.result)
    print(f"{len(false_alarms)} false alarm(s) in {len(windows)} undrifted windows ({', '.join(false_alarms) or 'none'}); "
          f"the shifted mix caught in {caught} of {len(windows)}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
