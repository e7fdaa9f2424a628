"""The declared map of products (kronkers_ml.products) against pipeline.yaml and against what a build writes."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from kronkers_ml.products import PRODUCTS, ProductMissing, check_spec, require_product

# Written under the outputs folder by something other than a task's declared products: the executed notebooks
# (nb/<task>.*), the embedded MLflow store, and what the build's hooks and the monitor record (in the map too).
NOT_TASK_PRODUCTS = ("nb", "mlflow", "build")


def test_the_map_is_pipeline_yaml():
    found = check_spec(ROOT / "pipeline.yaml")
    assert found == {p.path: p.task for p in PRODUCTS.values() if p.task}


def test_a_product_added_to_pipeline_yaml_alone_fails_the_check(tmp_path):
    spec = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    task = next(t for t in spec["tasks"] if t["name"] == "evaluate-service-time")
    task["product"]["residuals"] = "{{out}}/service_time/residuals.parquet"
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"service_time/residuals.parquet \(task evaluate-service-time\) is not declared"):
        check_spec(tmp_path / "pipeline.yaml")


def test_a_missing_product_names_its_task(tmp_path):
    with pytest.raises(ProductMissing, match=r"no service_time/metrics.json yet under .*: build the pipeline \(task evaluate-service-time\)"):
        require_product("service_time.metrics", tmp_path)


def undeclared_files(out: Path) -> list[str]:
    "Files under `out` that no declared product (file or folder) holds; executed notebooks, Ploomber's metadata and lock files aside."
    declared = [Path(p.path) for p in PRODUCTS.values()]
    left = []
    for f in out.rglob("*"):
        rel = f.relative_to(out)
        if f.is_dir() or rel.parts[0] in NOT_TASK_PRODUCTS or f.suffix in (".metadata", ".lock"): continue
        if not any(rel == d or d in rel.parents for d in declared): left.append(str(rel))
    return sorted(left)


def test_every_product_of_the_build_is_declared_and_built(built):
    assert undeclared_files(built) == []
    missing = [k for k, p in PRODUCTS.items() if p.task and not (built / p.path).exists()]
    # the Julia task is skipped where no Julia kernel is installed
    assert set(missing) <= {"demand.segment_stats_julia"}, missing
