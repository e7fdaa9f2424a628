"""Models in R and Julia: the R segmentation runs in the tiny pipeline and Python reads its products; a task whose
Jupyter kernel is missing is skipped with a message, and runs once a kernel of that name exists."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from ploomber.spec import DAGSpec

from conftest import error_outputs, image_outputs, ploomber_build, product_at
from kronkers_ml.operations.polyglot import CUSTOMER_ORDERS_SCHEMA, read_segments


# --- R: customer segments -------------------------------------------------------------------------------------

def test_r_task_ran_in_the_ir_kernel_and_drew_its_plots(built):
    nb = built / "nb" / "segment-customers.ipynb"
    meta = json.loads(nb.read_text())["metadata"]
    assert meta["kernelspec"]["name"] == "ir" and meta["kernelspec"]["language"] == "R"
    assert not error_outputs(nb) and image_outputs(nb)
    assert (built / "nb" / "segment-customers.html").stat().st_size > 0


def test_r_segments_cover_every_customer_with_their_rfm(built):
    orders = pd.read_csv(product_at(built, "demand.customer_orders"), dtype={"customer_id": str, "invoice_id": str})
    assert list(orders.columns) == list(CUSTOMER_ORDERS_SCHEMA)
    segments = read_segments(product_at(built, "demand.segments"))           # the contract the Python side checks
    summary = json.loads(product_at(built, "demand.segments_summary").read_text())
    assert sorted(segments.customer_id) == sorted(orders.customer_id.unique())
    by_customer = orders.groupby("customer_id").agg(frequency=("invoice_id", "size"), monetary=("revenue", "sum"))
    merged = segments.set_index("customer_id").join(by_customer, rsuffix="_py")
    assert (merged.frequency == merged.frequency_py).all()
    assert merged.monetary.to_numpy() == pytest.approx(merged.monetary_py.to_numpy(), abs=0.01)
    last = pd.to_datetime(orders.date).max()
    last_order = pd.to_datetime(orders.date).groupby(orders.customer_id).max()
    assert (merged.recency_days == (last + pd.Timedelta(days=1) - last_order.loc[merged.index]).dt.days).all()
    k = summary["k"]
    assert summary["params"]["k_min"] <= k <= summary["params"]["k_max"]
    assert sorted(segments.segment.unique()) == list(range(1, k + 1)) and segments.segment_name.nunique() == k
    best = max(summary["silhouette"], key=lambda s: s["mean_width"])
    assert best["k"] == k and summary["n_customers"] == len(segments)
    profile = segments.groupby("segment").monetary.median()
    assert profile.iloc[0] == profile.max()                              # segment 1 is the best spenders' segment


def test_python_task_reads_the_r_products(built):
    shares = pd.read_parquet(product_at(built, "demand.segment_shares"))
    segments = read_segments(product_at(built, "demand.segments"))
    assert shares.customers.sum() == len(segments)
    assert shares.revenue_share.sum() == pytest.approx(1.0) and shares.customer_share.sum() == pytest.approx(1.0)
    assert shares.revenue.sum() == pytest.approx(segments.monetary.sum())
    assert not error_outputs(built / "nb" / "summarise-segments.ipynb") and image_outputs(built / "nb" / "summarise-segments.ipynb")


# --- Julia: skipped where its kernel is missing ---------------------------------------------------------------

def test_julia_task_is_skipped_with_its_message_and_the_rebuild_runs_nothing(built):
    assert not product_at(built, "demand.segment_stats_julia").exists()
    assert not (built / "nb" / "summarise-segments-julia.ipynb").exists()
    done = ploomber_build(built)
    assert "Task 'summarise-segments-julia' skipped: Jupyter kernel 'julia-1.11' is not installed" in done.stderr
    assert "IJulia" in done.stderr
    assert not re.findall(r"^(\S+)\s+True\s", done.stdout, flags=re.M), done.stdout


def _mini_pipeline(folder: Path, kernel: str) -> Path:
    "A one-task pipeline.yaml whose notebook (Python code) is run by the kernel called `kernel`, with the skip hook."
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("upstream = None\nproduct = None\nvalue = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from pathlib import Path\nPath(product['answer']).write_text(str(value * 42))")])
    nb.metadata.kernelspec = {"name": kernel, "language": "julia", "display_name": kernel}
    nbformat.write(nb, folder / "task.ipynb")
    (folder / "pipeline.yaml").write_text(f"""
tasks:
  - source: task.ipynb
    name: stand-in
    kernelspec_name: {kernel}
    check_if_kernel_installed: false
    on_render: kronkers_ml.operations.polyglot.skip_without_kernel
    product:
      nb: '{folder}/out/stand-in.ipynb'
      answer: '{folder}/out/answer.txt'
    params:
      value: 2
""")
    return folder / "pipeline.yaml"


def _register_kernel(jupyter_dir: Path, name: str, language: str) -> None:
    "A kernel spec called `name` that runs this Python (a stand-in for Julia: it claims `language`)."
    spec = jupyter_dir / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"stand-in {name}", "language": language}))


def test_missing_kernel_skips_the_task_and_the_build_succeeds(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    dag = DAGSpec(_mini_pipeline(tmp_path, "julia-0.0-absent")).to_dag()
    with pytest.warns(UserWarning, match="kernel 'julia-0.0-absent' is not installed"):
        report = dag.build(show_progress=False)
    assert not (tmp_path / "out" / "answer.txt").exists()
    assert report.to_pandas()["Ran?"].tolist() == [False]


def test_installed_stand_in_kernel_runs_the_task(tmp_path, monkeypatch):
    _register_kernel(tmp_path / "jupyter", "julia-0.0-standin", "python")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    dag = DAGSpec(_mini_pipeline(tmp_path, "julia-0.0-standin")).to_dag()
    dag.build(show_progress=False)
    assert (tmp_path / "out" / "answer.txt").read_text() == "84"            # the injected value = 2 was used
    executed = json.loads((tmp_path / "out" / "stand-in.ipynb").read_text())
    assert executed["metadata"]["kernelspec"]["name"] == "julia-0.0-standin"


def test_parameters_are_injected_in_the_kernels_language(tmp_path, monkeypatch):
    _register_kernel(tmp_path / "jupyter", "julia-0.0-syntax", "julia")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    dag = DAGSpec(_mini_pipeline(tmp_path, "julia-0.0-syntax")).to_dag().render(show_progress=False)
    cells = nbformat.reads(dag["stand-in"].source.nb_str_rendered, as_version=4).cells
    injected = next(c.source for c in cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'product = Dict("nb" => ' in injected and "value = 2" in injected
