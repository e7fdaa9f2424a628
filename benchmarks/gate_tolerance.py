"""How far the demand gate's refitted MASE lands from metrics.json's, under one BLAS thread and the machine's default.

The gate (`register_and_gate(..., expected=...)`) must reproduce the figure the pipeline reported within
`kronkers_ml.platform.registry.GATE_RTOL`; this measures the noise that tolerance has to leave room for, on a built outputs
folder (`backtest-demand` and `build-daily-revenue` done):

    python benchmarks/gate_tolerance.py --out outputs [--result benchmarks/results/gate_tolerance.json]
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "outputs"))
    ap.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "gate_tolerance.json"))
    args = ap.parse_args()
    import pandas as pd
    from threadpoolctl import threadpool_info, threadpool_limits
    from kronkers_ml.core import read_json
    from kronkers_ml.demand.family import demand_heldout, demand_score
    from kronkers_ml.platform.registry import GATE_RTOL
    metrics = read_json(Path(args.out) / "demand" / "metrics.json")
    held = demand_heldout(pd.read_parquet(Path(args.out) / "demand" / "daily.parquet"), metrics)
    m = metrics["model"]
    spec = types.SimpleNamespace(spec={"model": m["name"], "params": m["params"]})
    model = types.SimpleNamespace(unwrap_python_model=lambda: spec)   # what demand_score reads of a loaded version
    runs = {}
    for threads in (None, 1):
        t0 = time.perf_counter()
        if threads is None: mase = demand_score(model, held)
        else:
            with threadpool_limits(threads): mase = demand_score(model, held)
        runs["default" if threads is None else f"{threads}_thread"] = {
            "mase": mase, "relative_difference": abs(mase - m["own_mase"]) / m["own_mase"], "seconds": time.perf_counter() - t0}
    result = {"metrics_json_own_mase": m["own_mase"], "gate_rtol": GATE_RTOL, "runs": runs,
              "blas": [(i["internal_api"], i["num_threads"]) for i in threadpool_info()], "machine": machine_info()}
    print(write_result(result, args.result))
    for name, r in runs.items():
        print(f"{name}: gate MASE {r['mase']!r} against metrics.json {m['own_mase']!r}: relative {r['relative_difference']:.2g}")


if __name__ == "__main__":
    main()
