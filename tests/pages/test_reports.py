"""Report notebooks run top to bottom with their defaults' shape, on built outputs and on none."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

from conftest import ploomber_build, product_at

ROOT = Path(__file__).resolve().parents[2]
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
            texts.append("".join(data.get("text/html", "")))           # the build banner is HTML
    return texts


def test_service_time_report_shows_the_built_figures(built, tmp_path):
    text = "\n".join(run_report(ROOT / "reports" / "service_time.ipynb", built, tmp_path))
    metrics = json.loads(product_at(built, "service_time.metrics").read_text())
    assert f"{metrics['data']['rows_test']:,} deliveries" in text
    assert "Figure" in text


def test_returns_report_shows_the_built_figures(built, tmp_path):
    text = "\n".join(run_report(ROOT / "reports" / "returns.ipynb", built, tmp_path))
    metrics = json.loads(product_at(built, "returns.metrics").read_text())
    batch = json.loads(product_at(built, "returns.batch.summary").read_text())
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
    assert "The last build failed" not in text          # no build recorded: no banner


@pytest.mark.parametrize("nb", REPORTS, ids=[p.stem for p in REPORTS])
def test_every_page_shows_the_banner_when_the_last_build_failed(nb, tmp_path):
    from kronkers_ml.pages.reports import record_build
    out = tmp_path / "failed"
    record_build(out, ["get-demand-data"], [], "2026-01-01T02:00:00+00:00", "2026-01-01T02:20:00+00:00")
    record_build(out, ["get-demand-data"], [{"task": "get-demand-data", "error": "ValueError: transactions.csv: row 7"}],
                 "2026-01-02T02:00:00+00:00", "2026-01-02T02:03:00+00:00")
    text = "\n".join(run_report(nb, out, tmp_path))
    assert "The last build failed" in text and "<code>get-demand-data</code>: ValueError: transactions.csv: row 7" in text
    assert "from the last successful build, finished 2026-01-01 02:20 UTC" in text
    assert "stale since 2026-01-02 02:00 UTC" in text


def test_a_failed_gate_fails_the_build_keeps_the_champion_and_the_page_says_so(tmp_path):
    """A build whose gate cannot reproduce the reported figure stops in register-demand with both figures; the
    champion stays, the version is tagged gate.decision=error, build/status.json names the task, the page says so."""
    from kronkers_ml.platform.registry import champion_version, history
    from kronkers_ml.platform.tracking import tracking_uri
    out = tmp_path / "out"
    ploomber_build(out, "--partially", "register-demand")
    status = json.loads(product_at(out, "build.status").read_text())
    assert status["status"] == "ok" and status["failed"] == [] and status["last_success"] == status["finished"]
    uri = tracking_uri(out)
    assert champion_version(uri, "demand") == "1"

    path = product_at(out, "demand.metrics")                   # the pipeline reports a figure 1% off the model's
    metrics = json.loads(path.read_text())
    true_mase = metrics["model"]["own_mase"]
    reported = true_mase * 1.01
    path.write_text(json.dumps({**metrics, "model": {**metrics["model"], "own_mase": reported}}))
    product_at(out, "demand.registration").unlink()           # so that register-demand runs again
    done = ploomber_build(out, "--partially", "register-demand", check=False)
    assert done.returncode != 0
    assert repr(reported) in done.stdout + done.stderr and "rtol=" in done.stdout + done.stderr

    assert champion_version(uri, "demand") == "1"            # the failed build changed nothing that is served
    h = history(uri, "demand")
    assert h.version.tolist() == [2, 1] and h.gate.tolist() == ["error", "promoted"]
    assert repr(reported) in h.reason[0] and repr(true_mase) in h.reason[0]

    failed = json.loads(product_at(out, "build.status").read_text())
    assert failed["status"] == "failed" and [f["task"] for f in failed["failed"]] == ["register-demand"]
    error = failed["failed"][0]["error"]
    assert error.startswith("GateError: ") and repr(reported) in error and repr(true_mase) in error
    assert failed["last_success"] == status["finished"] and failed["failing_since"] >= status["finished"]

    text = "\n".join(run_report(ROOT / "reports" / "demand.ipynb", out, tmp_path))
    assert "The last build failed" in text and "<code>register-demand</code>: GateError" in text
    assert "**Live model:** version 1 of `demand`" in text
    assert "The newest version, 2, is not live:** its registration failed a gate check" in text
