"""Monitoring of recommendations as new purchases arrive: the hit rate at evaluation against the hit rate on the
newest purchases, and the basket drift test on new purchases of the same generator and on a shifted mix of baskets.

    .venv/bin/python benchmarks/recommendations_monitoring.py                       # tiny settings (env.test.yaml)
    .venv/bin/python benchmarks/recommendations_monitoring.py --env-file env.yaml   # the default run's settings: slow

The generator, with the env file's settings and seed, makes a log `--extra-days` longer than the env file says
(`kronkers_ml.recommendations.monitor.generated_log_and_later`); the pipeline is built up to profile-recommendations
on the first part, given as the transaction log (`--env--demand--transactions`), in a temporary folder. The lines
after it are the new purchases; the shifted mix gives `--share` of their invoices to customers never seen before
(`new_customer_baskets`). The monitor (no retraining) then runs on the build alone, with the new purchases, and with
the shifted ones. Writes benchmarks/results/recommendations_monitoring.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

from common import machine_info, task_seconds, timed_build, write_result  # noqa: E402

from kronkers_ml.core import read_json  # noqa: E402
from kronkers_ml.demand.generator import parse_weekdays  # noqa: E402
from kronkers_ml.demand.settings import GetDemandData  # noqa: E402
from kronkers_ml.monitoring.monitor import monitor, read_env  # noqa: E402
from kronkers_ml.products import product_path  # noqa: E402
from kronkers_ml.recommendations.monitor import generated_log_and_later, new_customer_baskets  # noqa: E402

def generator_settings(env_file: str | Path) -> dict:
    "The keyword arguments of simulate_transactions that made the build's log (its env file's demand section and seed)."
    cfg = GetDemandData.from_env(read_env(env_file))
    if cfg.transactions:
        raise SystemExit(f"{env_file}: demand.transactions is a real log ({cfg.transactions}); new purchases are generated only for a generated log")
    return {"start": cfg.start, "days": cfg.days, "invoices_per_day": cfg.invoices_per_day, "n_products": cfg.n_products,
            "n_customers": cfg.n_customers, "growth": cfg.growth, "seed": cfg.seed, "country": cfg.sim_country or cfg.country,
            "closed_weekdays": parse_weekdays(cfg.sim_closed_weekdays), "clock": cfg.sim_clock, "timezone": cfg.timezone}


def one_check(env_file: str, out: Path, lines) -> dict:
    "The monitor on `lines` (recommendations only, no retraining): drift p-values, hit rate, its time."
    t0 = time.perf_counter()
    res = monitor(env_file, ["recommendations"], str(out), current=lines, retrain_on_breach=False)["families"]["recommendations"]
    d, p = res["drift"], res["performance"]
    return {"seconds": round(time.perf_counter() - t0, 2), "drift_breach": d["breach"], "drifted": d.get("drifted"),
            "pvalues": {s["column"]: s["pvalue"] for s in d.get("scores", [])},
            "hit_rate": p.get("hit_rate"), "popular_hit_rate": p.get("popular_hit_rate"), "customers": p.get("customers"),
            "window": [p.get("from"), p.get("to")], "checked": p.get("checked"), "breach": p.get("breach"), "reason": p.get("reason")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env-file", default="env.test.yaml", help="the env file whose settings build the log (default: env.test.yaml)")
    ap.add_argument("--extra-days", type=int, default=28, help="days of new purchases after the built log (default 28)")
    ap.add_argument("--share", type=float, default=0.3, help="shifted mix: share of the new invoices given to new customers")
    ap.add_argument("--keep", help="build into this folder and keep it (default: a temporary folder)")
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "recommendations_monitoring.json"))
    args = ap.parse_args(argv)
    env_file = str(ROOT / args.env_file) if not Path(args.env_file).is_absolute() else args.env_file
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "out"
        t0 = time.perf_counter()
        log, new = generated_log_and_later(generator_settings(env_file), args.extra_days)
        generate_s = time.perf_counter() - t0
        log_path = Path(tmp) / "log.parquet"; log.to_parquet(log_path)
        build_s, stdout = timed_build(out, Path(env_file).name, "--partially", "profile-recommendations",
                                      "--env--demand--transactions", str(log_path))
        evaluation = read_json(product_path("recommendations.hit_rate", out))
        build = one_check(env_file, out, None)
        same = one_check(env_file, out, new)
        shifted = one_check(env_file, out, new_customer_baskets(new, args.share, seed=0))
    result = {"env_file": args.env_file, "extra_days": args.extra_days, "share": args.share, "log_lines": len(log),
              "new_lines": len(new), "new_from": str(new["date"].min().date()), "new_to": str(new["date"].max().date()),
              "generate_s": round(generate_s, 2), "build_s": round(build_s, 1), "task_s": task_seconds(stdout),
              "evaluation": evaluation, "build": build, "same_generator": same, "shifted": shifted, "machine": machine_info()}
    path = write_result(result, args.result)
    print(f"hit rate at evaluation {evaluation['hit_rate']:.3f} ({evaluation['customers']} customers, {evaluation['from']} to {evaluation['to']})")
    for name, r in (("build (test window)", build), ("new purchases, same generator", same), (f"shifted mix ({args.share:.0%} new customers)", shifted)):
        print(f"{name}: hit rate {r['hit_rate']:.3f} of {r['customers']} customers ({r['window'][0]} to {r['window'][1]}), "
              f"drift {'BREACH ' + ', '.join(r['drifted']) if r['drift_breach'] else 'none'}; min p-value "
              f"{min(v for v in r['pvalues'].values() if v is not None):.2g}; performance "
              f"{'BREACH' if r['breach'] else 'ok' if r['checked'] else 'not judged'}; {r['seconds']} s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
