"""Training time of the recommendations family on a generated log: the generator with and without customers'
preferences, the validation search over EASE's settings, the final fit and the oracle's probabilities, in wall and CPU
seconds (the machine is shared: CPU seconds are the steadier figure).

    .venv/bin/python benchmarks/recommendations_training.py                    # env.yaml's sizes
    .venv/bin/python benchmarks/recommendations_training.py --env env.test.yaml

Writes benchmarks/results/recommendations_training_<env>.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info, write_result  # noqa: E402


def timed(results: dict, name: str, fn):
    "Run `fn`, store its wall and CPU seconds under `name`, return its result."
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    results[name] = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3)}
    print(name, results[name], flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="env.yaml", help="env file whose demand and recommendations sizes are used")
    args = parser.parse_args(argv)
    import pandas as pd
    from kronkers_ml.demand.data import check_transactions, clean_transactions
    from kronkers_ml.demand.generator import parse_weekdays, purchase_probabilities, simulate_transactions
    from kronkers_ml.recommendations.evaluate import float_list, tune_ease
    from kronkers_ml.recommendations.models import ease_weights, history
    from kronkers_ml.recommendations.settings import TrainRecommendations
    from kronkers_ml.settings import load_env

    cfg = TrainRecommendations.from_env(load_env(ROOT / args.env))
    gen = dict(start=cfg.start, days=cfg.days, invoices_per_day=cfg.invoices_per_day, n_products=cfg.n_products,
               n_customers=cfg.n_customers, growth=cfg.growth, seed=cfg.seed, country=cfg.sim_country or cfg.country,
               closed_weekdays=parse_weekdays(cfg.sim_closed_weekdays))
    steps: dict = {}
    timed(steps, "generate_without_preferences", lambda: simulate_transactions(preferences=False, **gen))
    log = timed(steps, "generate_with_preferences", lambda: simulate_transactions(**gen))
    from kronkers_ml.recommendations.split import purchases, windows
    bought = purchases(clean_transactions(check_transactions(log, "generated log"))[0])
    win = windows(bought, cfg.test_days, cfg.valid_days)
    customers, items = pd.Index(sorted(bought.customer_id.unique())), pd.Index(sorted(bought.product_id.unique()))
    lambdas, weights = float_list(cfg.ease_lambdas, "lambdas"), float_list(cfg.repeat_weights, "weights")
    table = timed(steps, "validation_search", lambda: tune_ease(bought, customers, items, win["valid_start"], cfg.valid_days,
                                                                lambdas, weights, cfg.k, cfg.half_life_days, cfg.recent_days))
    h = timed(steps, "history_before_test", lambda: history(bought, win["test_start"], customers, items,
                                                            cfg.half_life_days, cfg.recent_days))
    timed(steps, "final_fit", lambda: ease_weights(h.bought, float(table["lambda"].iloc[0])))
    timed(steps, "oracle_probabilities", lambda: purchase_probabilities(f"{win['test_start']:%Y-%m-%d}", f"{win['last_day']:%Y-%m-%d}",
                                                                        n_replicates=cfg.n_replicates, **gen))
    result = {"env": args.env, "machine": machine_info(), "purchases": len(bought), "customers": len(customers),
              "products": len(items), "candidates": len(table), "steps": steps}
    path = write_result(result, ROOT / "benchmarks" / "results" / f"recommendations_training_{Path(args.env).stem}.json")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
