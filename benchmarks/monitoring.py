"""Monitoring figures: whylogs profiling throughput on a 1M-row frame, the monitoring share of a pipeline build,
and drift detection on the drift scenarios (service time: hard parking; returns: a dimmer camera): nights until the
alert, and false alarms on undrifted data.

    .venv/bin/python benchmarks/monitoring.py                  # tiny pipeline run (env.test.yaml), 50 seeds
    .venv/bin/python benchmarks/monitoring.py --env default    # the nightly-size run (env.yaml): minutes
    .venv/bin/python benchmarks/monitoring.py --skip-build     # throughput and drift detection only
    .venv/bin/python benchmarks/monitoring.py --judge OUT1 OUT2 OUT3   # only: the performance checks on finished builds

`--judge` runs the monitor's performance check (no retraining) on the `out` folders of finished default builds,
for example `ploomber build --partially register-service-time --env--seed S --env--out OUT` and the same for
`register-demand`, and reports per build whether it alerts, the window's figure, the normal for its weeks and the
limit: fresh builds of a healthy model must stay quiet. Its result goes to benchmarks/results/monitoring_builds.json.

The build goes into a fresh temporary folder, never outputs/. Writes benchmarks/results/monitoring.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

from common import machine_info, task_seconds, timed_build, write_result  # noqa: E402

from kronkers_ml.monitoring.drift import drift_scores, flag_drift  # noqa: E402
from kronkers_ml.monitoring.scenarios import nights_until_alert, pixel_classifier, returns_nights  # noqa: E402
from kronkers_ml.monitoring.profiles import profile_frame  # noqa: E402
from kronkers_ml.returns.data import CATEGORIES, load_fashion_mnist  # noqa: E402
from kronkers_ml.service_time.features import location_features  # noqa: E402
from kronkers_ml.service_time.generator import (apply_scenario, simulate_customer_latents, simulate_customers,  # noqa: E402
                                     simulate_routes)

# Tasks that do monitoring work only (the data-quality gates, which also store the raw-data profiles, and the tasks
# that write each family's drift profiles) ...
MONITORING_TASKS = ("check-service-data", "check-demand-data", "profile-service-time", "profile-demand", "profile-returns")
# ... and monitoring work done inside another task, which reports its seconds in a product: (task, product, key).
# The returns gate and the photos' profile run inside get-returns-data.
FOLDED_MONITORING = (("get-returns-data", "monitoring/quality/returns.json", "seconds"),)


def throughput(n_rows: int = 1_000_000, repeats: int = 3, seed: int = 0) -> dict:
    "Rows per second of profile_frame on a frame shaped like the stops table joined to customers (11 columns)."
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"stop_id": np.arange(n_rows), "customer_id": rng.integers(1, 6000, n_rows),
                          "date": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 730, n_rows), unit="D"),
                          "seq": rng.integers(1, 20, n_rows), "n_items": rng.poisson(16, n_rows),
                          "weight_kg": rng.lognormal(2, 0.5, n_rows), "n_boxes": rng.integers(1, 5, n_rows),
                          "zone": rng.choice(["urban", "suburban", "rural"], n_rows), "floor": rng.integers(0, 9, n_rows),
                          "parking_difficulty": rng.integers(1, 4, n_rows), "lat": 59.9 + rng.normal(0, 0.1, n_rows)})
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter(); profile_frame(frame); seconds.append(time.perf_counter() - t0)
    best = min(seconds)
    return {"rows": n_rows, "columns": frame.shape[1], "seconds": seconds, "rows_per_s": n_rows / best}


def _with_locations(stops, customers):
    return stops.merge(location_features(customers), on="customer_id")


def drift_detection(seeds: int, columns: list[str], p_value: float, days: int = 14, n_customers: int = 2000) -> dict:
    """Per seed: a reference year, then `days` nightly checks of the days so far, undrifted and under the scenario
    (the scenario's customers order from its first day). Returns days until the first alert and false alarms."""
    until, false_alarms, checks, seeds_alarmed = [], 0, 0, 0
    for seed in range(seeds):
        before = false_alarms
        cust = simulate_customers(n_customers, seed)
        lat = simulate_customer_latents(cust["customer_id"].to_numpy(), seed)
        # one route simulation: the reference period, then `days` fresh days of the same customers and routes
        stops, _ = simulate_routes(cust, lat, 3, "2024-01-01", 300 + days, 10, seed)
        ref = profile_frame(_with_locations(stops[stops.date < "2024-10-27"], cust), columns)
        for scenario in (None, "hard_parking"):
            new = _with_locations(stops[stops.date >= "2024-10-27"], apply_scenario(cust, scenario, seed))
            hit = None
            for k in range(1, days + 1):
                cur = new[new.date < pd.Timestamp("2024-10-27") + pd.Timedelta(days=k)]
                if not len(cur): continue
                flagged = flag_drift(drift_scores(profile_frame(cur, columns), ref, columns), p_value=p_value).drifted.any()
                if scenario is None:
                    checks += 1; false_alarms += int(flagged)
                elif flagged:
                    hit = k; break
            if scenario: until.append(hit)
        seeds_alarmed += int(false_alarms > before)
    caught = [u for u in until if u is not None]
    return {"seeds": seeds, "nightly_checks_undrifted": checks, "false_alarms": false_alarms,
            "seeds_with_a_false_alarm": seeds_alarmed, "scenario": "hard_parking",
            "scenario_caught": len(caught), "days_until_alert": {"min": min(caught, default=None),
                                                                  "median": float(np.median(caught)) if caught else None,
                                                                  "max": max(caught, default=None)},
            "p_value": p_value, "columns": columns, "stops_per_day": 3 * 10}


def returns_drift_detection(seeds: int, columns: list[str], p_value: float, fashion_mnist_dir: str,
                            brightness: float = 0.7, nights: int = 14, per_night: int = 50) -> dict:
    """Per seed: scored test photos as the reference, then `nights` nightly batches of `per_night` other test photos,
    undrifted and dimmed to `brightness` (a pixel logistic regression scores them, see nbs/monitoring/05_scenarios)."""
    classify = pixel_classifier(*load_fashion_mnist(fashion_mnist_dir, "train"), CATEGORIES)
    images, _ = load_fashion_mnist(fashion_mnist_dir, "t10k")
    until, alarmed = [], 0
    for seed in range(seeds):
        ref, fresh = returns_nights(images, classify, seed, nights, per_night)
        _, dim = returns_nights(images, classify, seed, nights, per_night, brightness=brightness)
        alarmed += nights_until_alert(ref, fresh, columns, p_value, nights=nights) is not None
        until.append(nights_until_alert(ref, dim, columns, p_value, nights=nights))
    caught = [u for u in until if u is not None]
    return {"seeds": seeds, "nights": nights, "photos_per_night": per_night, "seeds_with_a_false_alarm": alarmed,
            "scenario": f"dim camera ({brightness:.0%} brightness)", "scenario_caught": len(caught),
            "nights_until_alert": {"min": min(caught, default=None), "median": float(np.median(caught)) if caught else None,
                                   "max": max(caught, default=None)},
            "p_value": p_value, "columns": columns}


def build_share(env_file: str) -> dict:
    "Time one cold build; the monitoring tasks' share of it, and one `kronkers-monitor --no-retrain` after it."
    with tempfile.TemporaryDirectory() as d:
        total, stdout = timed_build(Path(d), env_file)
        tasks = task_seconds(stdout)
        env = dict(os.environ, PLOOMBER_ENV_FILENAME=env_file)
        t0 = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).parent / "kronkers-monitor"), "--env-file", env_file, "--out", d,
                               "--no-retrain"], cwd=ROOT, env=env, capture_output=True, text=True)
        monitor_s = time.perf_counter() - t0
        if done.returncode: sys.exit(f"kronkers-monitor failed:\n{done.stdout}\n{done.stderr}")
        folded = {task: float(json.loads((Path(d) / product).read_text())[key])
                  for task, product, key in FOLDED_MONITORING if task in tasks}
    task_total = sum(tasks.values())
    mon = sum(tasks.get(t, 0.0) for t in MONITORING_TASKS) + sum(folded.values())
    return {"env_file": env_file, "build_wall_s": total, "task_seconds": tasks, "tasks_total_s": task_total,
            "monitoring_tasks": list(MONITORING_TASKS), "monitoring_in_other_tasks_s": folded,
            "monitoring_tasks_s": mon, "monitoring_share_of_tasks": mon / task_total,
            "monitor_command_s": monitor_s, "monitor_output": done.stdout.strip(),
            "monitoring_share_incl_monitor_command": (mon + monitor_s) / (task_total + monitor_s)}


def judge_builds(outs: list[str], env_file: str = "env.yaml", families: tuple[str, ...] = ("service_time", "demand")) -> dict:
    "The monitor's performance verdict (no retraining) on the out folders of finished builds, one row per build and family."
    from kronkers_ml.monitoring.monitor import monitor
    rows = []
    for out in outs:
        summary = monitor(ROOT / env_file, list(families), out, retrain_on_breach=False)
        for fam, res in summary["families"].items():
            p = res["performance"]
            value = p.get("mase", p.get("mae"))
            rows.append({"out": out, "family": fam, "checked": p.get("checked"), "alert": bool(p.get("breach")),
                         "drift_checked": res["drift"].get("checked"), "drift_alert": bool(res["drift"].get("breach")),
                         "window_end": str(p.get("window_end")), "metric": p.get("metric"), "value": value,
                         "trained": p.get("training_mase", p.get("training_mae")), "expected": p.get("expected"),
                         "limit": p.get("limit"), "seasonal_factor": (p.get("seasonal") or {}).get("factor"),
                         "seasonal_years": (p.get("seasonal") or {}).get("years"), "reason": p.get("reason")})
    return {"builds": outs, "performance_alerts": sum(r["alert"] for r in rows),
            "drift_alerts": sum(r["drift_alert"] for r in rows), "checks": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=["test", "default"], default="test", help="pipeline run to time (default: test)")
    p.add_argument("--seeds", type=int, default=50, help="seeds for the drift-detection figures (default 50)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the throughput frame (default 1M)")
    p.add_argument("--skip-build", action="store_true", help="do not time a pipeline build")
    p.add_argument("--judge", nargs="+", metavar="OUT", help="only judge the performance of these finished builds")
    args = p.parse_args(argv)
    if args.judge:
        result = {"machine": machine_info(), **judge_builds(args.judge)}
        write_result(result, ROOT / "benchmarks" / "results" / "monitoring_builds.json")
        print(json.dumps(result, indent=2, default=str))
        return result
    env_file = "env.yaml" if args.env == "default" else "env.test.yaml"
    watched = yaml.safe_load((ROOT / "config" / "monitoring.yaml").read_text())
    env = yaml.safe_load((ROOT / env_file).read_text())
    p_value = float(env["monitoring"]["drift_p_value"])
    result = {"machine": machine_info(),
              "profiling": throughput(args.rows),
              "drift_detection": drift_detection(args.seeds, watched["service_time"]["drift"]["columns"], p_value),
              "returns_drift_detection": returns_drift_detection(args.seeds, watched["returns"]["drift"]["columns"], p_value,
                                                                 env["returns"]["fashion_mnist_dir"])}
    if not args.skip_build:
        share = build_share(env_file)
        result["pipeline"] = share
    out = ROOT / "benchmarks" / "results" / "monitoring.json"
    write_result(result, out)
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
