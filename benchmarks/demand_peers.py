"""Demand peers: statsforecast's AutoARIMA, AutoETS, AutoTheta and MSTL on the pipeline's own test folds, beside the
model the pipeline chose.

    .venv/bin/python benchmarks/demand_peers.py OUT          # OUT: the outputs folder of a build (default: outputs/)
    .venv/bin/python benchmarks/demand_peers.py --transactions LOG.csv --timezone UTC --country US   # any other log

With a build's outputs folder, the folds (origins, horizon) and the chosen model's forecasts are read from its
`demand/metrics.json` and `demand/backtest.parquet`, and the daily series from `demand/daily.parquet`. With
`--transactions`, the log is cleaned and aggregated as the pipeline does, and the project's backtest runs here
on the folds of env.yaml's `demand:` block (validation folds, then the test folds, the choice made again at each test
origin on the folds that had ended by it, as the pipeline does). Every peer is
fitted on the daily revenue up to each origin (as a new user would call it: season 7; MSTL also yearly when the
history holds two years) and scored by MASE on the days after it, like the pipeline's models. The JSON gives each
model's MASE, its ratio to the seasonal naive, the chosen model's interval coverage, and the fit time per fold of
the candidates and of the peers.

statsforecast 2.1.1 installs beside the project's numpy<2 (the `peers` extra of pyproject.toml, pinned in
requirements.lock); without it the script says how to install it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine_info, write_result  # noqa: E402

from kronkers_ml.core import read_json  # noqa: E402
from kronkers_ml.metrics import mase  # noqa: E402

PEERS = ["AutoARIMA", "AutoETS", "AutoTheta", "MSTL"]


def peer_models(history_days: int):
    "The statsforecast models, season 7 (MSTL also 365 with two years of history)."
    try:
        from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta
    except ImportError:
        sys.exit("statsforecast is not installed: .venv/bin/python -m pip install statsforecast==2.1.1 "
                 "(the `peers` extra; it installs beside numpy<2)")
    seasons = [7, 365] if history_days >= 2 * 365 + 28 else [7]
    return [AutoARIMA(season_length=7), AutoETS(season_length=7), AutoTheta(season_length=7),
            MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))]


def peer_fold(daily: pd.DataFrame, origin: pd.Timestamp, horizon: int) -> tuple[pd.DataFrame, float]:
    "Forecasts of every peer for the `horizon` days after `origin`, and the fit seconds."
    from statsforecast import StatsForecast
    hist = daily[daily["date"] <= origin]
    df = pd.DataFrame({"unique_id": "shop", "ds": hist["date"].to_numpy(), "y": hist["revenue"].to_numpy(float)})
    t0 = time.perf_counter()
    fc = StatsForecast(models=peer_models(len(hist)), freq="D", n_jobs=1).forecast(df=df, h=horizon)
    seconds = time.perf_counter() - t0
    fc = fc.rename(columns={"ds": "date"}).reset_index(drop=True)
    return fc[["date", *PEERS]].assign(**{p: lambda f, p=p: f[p].clip(lower=0) for p in PEERS}), seconds


def own_backtest(daily: pd.DataFrame, save_forecasts: Path | None = None) -> tuple[pd.DataFrame, dict]:
    "The project's backtest on env.yaml's folds: the test folds' forecasts (`model`: chosen at each origin) and metrics-like facts."
    from kronkers_ml.demand.backtest import (backtest_scores, choice_window, choose_model, chosen_backtest, interval_coverage,
                                      rolling_choice, rolling_origins, run_backtest, validation_origins)
    p = yaml.safe_load((ROOT / "env.yaml").read_text())["demand"]
    h, n, step, nv = int(p["horizon"]), int(p["n_origins"]), int(p["step"]), int(p["n_valid"])
    names = [c.strip() for c in str(p["candidates"]).split(",") if c.strip()]
    spec = {c: {} for c in names}
    spec.update({k: v for k, v in {"sarima": {k: int(p[k]) for k in ("max_p", "max_q", "max_P", "max_Q")},
                                   "lightgbm": {"horizon": h}}.items() if k in spec})
    origins = rolling_origins(daily["date"].max(), n, h, step)
    valid = validation_origins(origins[0], nv, h, step)
    fc, folds = run_backtest(daily, valid + origins, h, spec, n_jobs=-1)
    if save_forecasts:
        fc.assign(fold=np.where(fc["origin"].isin(valid), "valid", "test")).to_parquet(save_forecasts)
    choices = rolling_choice(fc, daily, names, origins, nv, h)
    served, _ = choose_model(fc[fc["origin"].isin(choice_window(fc["origin"].unique(), daily["date"].max(), nv, h))],
                             daily, names)
    test = chosen_backtest(fc, choices, h, last_folds=nv)
    test_mase = backtest_scores(test, daily, [*names, "model"])["mase"]
    return test, {"model": {"name": served, **interval_coverage(test)},
                  "backtest": {"origins": [str(o.date()) for o in origins], "horizon_days": h,
                               "fit_s": {c: folds[f"fit_s_{c}"].tolist() for c in names}},
                  "selection": {"at_test_origins": {str(o.date()): m for o, m in zip(choices["origin"], choices["model"])}},
                  "candidates": {c: {"test_mase": float(test_mase.get(c, np.nan))} for c in names}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "outputs", help="outputs folder of a build")
    parser.add_argument("--transactions", type=Path, default=None, help="a transaction log to backtest here instead")
    parser.add_argument("--timezone", default="Europe/Oslo", help="with --transactions: the log's demand.timezone (default Europe/Oslo)")
    parser.add_argument("--country", default="NO", help="with --transactions: the log's demand.country (default NO)")
    parser.add_argument("--save-forecasts", type=Path, default=None,
                        help="with --transactions: write every candidate's forecasts of the validation and test folds here (Parquet)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write (default benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.transactions:
        from kronkers_ml.demand.series import daily_revenue
        from kronkers_ml.demand.data import clean_transactions, load_transactions
        lines, _ = clean_transactions(load_transactions(str(args.transactions), tz=args.timezone))
        daily = daily_revenue(lines, country=args.country)
        backtest, metrics = own_backtest(daily, args.save_forecasts)
        source = f"{args.transactions.name} (timezone {args.timezone}, country {args.country})"
    else:
        d = args.out / "demand"
        for f in ("daily.parquet", "metrics.json", "backtest.parquet"):
            if not (d / f).is_file():
                sys.exit(f"{d / f} is missing: build the pipeline (ploomber build --partially backtest-demand) first")
        daily, metrics, backtest = pd.read_parquet(d / "daily.parquet"), read_json(d / "metrics.json"), pd.read_parquet(d / "backtest.parquet")
        source = "build outputs"
    horizon = int(metrics["backtest"]["horizon_days"])
    scores: dict[str, list[float]] = {m: [] for m in ["model", "seasonal_naive", *PEERS]}
    fit_s = []
    for origin in pd.to_datetime(metrics["backtest"]["origins"]):
        fold = backtest[backtest["origin"] == origin].sort_values("date").reset_index(drop=True)
        peers, seconds = peer_fold(daily, origin, horizon)
        if not (peers["date"].to_numpy() == fold["date"].to_numpy()).all():
            raise ValueError(f"fold at {origin:%Y-%m-%d}: the peers' days are not the backtest's")
        fit_s.append(seconds)
        scale = daily.loc[daily["date"] <= origin, "revenue"].to_numpy(float)
        for m in scores:
            pred = fold[m] if m in fold else peers[m]
            scores[m].append(mase(fold["actual"].to_numpy(float), pred.to_numpy(float), scale, 7))
        print(f"{origin:%Y-%m-%d}: " + ", ".join(f"{m} {v[-1]:.3f}" for m, v in scores.items()), flush=True)
    mean = {m: float(np.mean(v)) for m, v in scores.items()}
    naive = mean["seasonal_naive"]
    result = {"source": source, "chosen_model": metrics["model"]["name"], "n_folds": len(fit_s), "horizon_days": horizon,
              "mase": mean, "ratio_to_seasonal_naive": {m: v / naive for m, v in mean.items()},
              "best_peer": min(PEERS, key=mean.get), "model_vs_best_peer": mean["model"] / min(mean[p] for p in PEERS),
              "peer_fit_s_per_fold": {"mean": float(np.mean(fit_s)), "max": float(np.max(fit_s))},
              "coverage": {k: metrics["model"][k] for k in ("coverage_80", "coverage_95")},
              "fit_s_per_fold": {c: float(np.mean(v)) for c, v in metrics["backtest"]["fit_s"].items()},
              "chosen_at_test_origins": metrics["selection"]["at_test_origins"],
              "candidates": metrics.get("candidates") or {n: {"test_mase": (metrics["challengers"].get(n) or {}).get("mase")}
                                                        for n in metrics["selection"]["candidates"]},
              "machine": machine_info()}
    output = args.output or ROOT / "benchmarks" / "results" / "demand_peers.json"
    write_result(result, output)
    print({k: result[k] for k in ("chosen_model", "ratio_to_seasonal_naive", "best_peer", "model_vs_best_peer", "coverage")})
    return result


if __name__ == "__main__":
    main()
