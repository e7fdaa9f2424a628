"""Report notebooks run top to bottom with their defaults' shape, on built outputs and on none."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORTS = sorted((ROOT / "reports").glob("*.ipynb"))


def run_report(nb: Path, out: Path, tmp_path: Path) -> list[str]:
    "Execute a report with `out` as its outputs folder; return the text of every output."
    executed = tmp_path / nb.name
    pm.execute_notebook(str(nb), str(executed), parameters={"out": str(out)}, cwd=str(nb.parent),
                        kernel_name="python3", progress_bar=False)
    cells = json.loads(executed.read_text())["cells"]
    texts = []
    for cell in cells:
        for o in cell.get("outputs", []):
            assert o["output_type"] != "error", o
            data = o.get("data", {})
            texts.append("".join(data.get("text/markdown", data.get("text/plain", o.get("text", "")))))
    return texts


def test_service_time_report_shows_the_built_figures(built, tmp_path):
    text = "\n".join(run_report(ROOT / "reports" / "service_time.ipynb", built, tmp_path))
    metrics = json.loads((built / "service_time" / "metrics.json").read_text())
    assert f"{metrics['data']['rows_test']:,} deliveries" in text
    assert "Figure" in text


def test_returns_report_shows_the_built_figures(built, tmp_path):
    text = "\n".join(run_report(ROOT / "reports" / "returns.ipynb", built, tmp_path))
    metrics = json.loads((built / "returns" / "metrics.json").read_text())
    batch = json.loads((built / "returns" / "batch" / "summary.json").read_text())
    hours = metrics["review"]["auto_share"] * 1000 * 2.0 / 60
    assert f"{hours:,.1f} hours of manual inspection saved per 1,000 returns" in text
    assert "2.0 minutes to inspect and sort one returned item" in text        # the assumption, stated
    for acc in (metrics["model"]["accuracy"], metrics["baselines"]["linear"]["accuracy"]):
        assert f"{acc * 100:,.1f}%" in text
    gap = metrics["model"]["accuracy"] - metrics["baselines"]["majority"]["accuracy"]   # accuracy: higher is better
    assert f"{abs(gap) * 100:,.1f} percentage points {'better' if gap >= 0 else 'worse'} than most common category" in text
    assert f"{batch['photos']:,} images" in text and f"{batch['needs_review']:,} needing review" in text
    assert "live dashboard" in text            # the slider is for the live page only


@pytest.mark.parametrize("nb", REPORTS, ids=[p.stem for p in REPORTS])
def test_report_runs_top_to_bottom_on_the_built_outputs(nb, built, tmp_path):
    text = "\n".join(run_report(nb, built, tmp_path))
    assert "make build" not in text, f"{nb.name} found no outputs in {built}"
    assert "Figure" in text or "<table" in text


@pytest.mark.parametrize("nb", REPORTS, ids=[p.stem for p in REPORTS])
def test_report_says_how_to_build_when_outputs_are_missing(nb, tmp_path):
    text = "\n".join(run_report(nb, tmp_path / "nothing-built", tmp_path))
    assert "make build" in text
