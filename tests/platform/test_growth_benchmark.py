"""benchmarks/growth.py, the measurements behind docs/growth.md: the power-law fit, and the script end to end on tiny
scales of the service-time and EASE steps (the library calls it makes still exist and run; what it writes)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "growth.py"


@pytest.fixture(scope="module")
def growth():
    spec = importlib.util.spec_from_file_location("growth_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_power_recovers_the_exponent(growth):
    xs = [0.125, 0.25, 0.5]
    fit = growth.fit_power(xs, [3.0 * x ** 2 for x in xs])
    assert fit["b"] == pytest.approx(2.0) and fit["a"] == pytest.approx(3.0)
    assert growth.fit_power([0.5], [1.0]) == {"a": None, "b": None}          # one point: no exponent
    runs = [{"scale": x, "wall_s": 10 * x, "cpu_s": 10 * x, "rss_imports_mb": 100.0, "peak_rss_mb": 100 + 40 * x}
            for x in xs]
    p = growth.project(runs)
    assert p["wall_s_exponent"] == pytest.approx(1.0) and p["wall_s"]["10x"] == pytest.approx(100.0)
    assert p["peak_rss_mb"]["100x"] == pytest.approx(100 + 4000.0)
    assert p["linear_from_largest"]["wall_s"]["1x"] == pytest.approx(10.0)


def test_script_measures_tiny_scales(tmp_path):
    out = tmp_path / "growth.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "service-data,clean-geofences,service-features,"
                           "lightgbm-fit,ease-fit", "--scales", "0.003,0.006", "--ease-scales", "0.25,0.5",
                           "--lgb-rounds", "3", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["steps"]) == {"service-data", "clean-geofences", "service-features", "lightgbm-fit", "ease-fit"}
    assert len(result["load_average_start"]) == 3 and result["machine"]["cpus"] >= 1
    for step in result["steps"]:
        runs = [r for r in result["runs"] if r["step"] == step]
        assert len(runs) == 2
        assert runs[0]["rows"] < runs[1]["rows"], step                      # the scale reached the input
        assert all(r["peak_rss_mb"] >= r["rss_imports_mb"] > 0 and r["cpu_s"] >= 0 for r in runs), step
        assert result["steps"][step]["wall_s_exponent"] is not None
    assert [r["n"] for r in result["runs"] if r["step"] == "ease-fit"] == [100, 200]
    assert "unknown steps" in subprocess.run([sys.executable, str(SCRIPT), "--steps", "nope"], cwd=ROOT,
                                             capture_output=True, text=True).stderr
