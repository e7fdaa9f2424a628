"""`kronkers build --scheduler`: the tiny pipeline on a real Dask cluster (a scheduler and two worker processes on
127.0.0.1, started once for the module). The selection is the smallest that still gives both workers work at once and a
chain to re-run: get-service-data beside get-demand-data -> check-demand-data. Products are compared with the session's
tiny build (`built`), which the suite makes anyway, rather than with a second local build."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kronkers_ml.platform.cluster import RUNNING_DIR, local_cluster, read_runs
from conftest import BIN, ROOT, ploomber_env

# one glob for `--partially`: get-service-data and check-demand-data (with its upstream get-demand-data), not
# check-service-data; the first test checks that exactly these three tasks ran
SELECTION = "*[tc]?[s-]??????-data"
TASKS = {"get-service-data", "get-demand-data", "check-demand-data"}
PROJECT_FILES = ["pipeline.yaml", "env.yaml", "env.test.yaml", "config", "nbs/pipeline", "reports", "kronkers_ml"]


def data_products(out: Path, project: Path) -> dict[str, str]:
    """sha256 of every data product under `out` (tables, JSON summaries and reports; not notebooks or logs), with the
    out folder's and the project's paths (which reports name) written as `<out>` and `<project>`."""
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.suffix in (".parquet", ".json", ".csv") and p.relative_to(out).parts[0] not in ("nb", "build", "profiles")]
    def digest(p):
        data = p.read_bytes().replace(str(out).encode(), b"<out>").replace(str(project).encode(), b"<project>")
        return hashlib.sha256(data).hexdigest()
    return {str(p.relative_to(out)): digest(p) for p in files}


def assert_products_are_a_local_builds(out: Path, project: Path, built: Path):
    "Every data product of the cluster build in `out` is byte for byte the session tiny build's (a local build)."
    cluster, local = data_products(out, project), data_products(built, ROOT)
    assert {"demand/transactions.parquet", "service_time/raw/pings.parquet", "monitoring/quality/demand.json"} <= set(cluster)
    assert set(cluster) <= set(local), sorted(set(cluster) - set(local))
    assert cluster == {k: local[k] for k in cluster}


def wait_for(predicate, what: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while not (found := predicate()):
        if time.monotonic() > deadline: raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    "A copy of the pipeline (notebooks, settings, library sources), so a test may edit a notebook."
    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir(): shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else: shutil.copy2(src, root / name)
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    "`dask scheduler` and two `dask worker` processes (one process, one thread each) on 127.0.0.1."
    with local_cluster(2, env={**ploomber_env(), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                       logs=tmp_path_factory.mktemp("dask")) as address:
        yield address


def kronkers_build(project: Path, out: Path, scheduler: str | None, *args: str, timeout: float = 900):
    cmd = [str(BIN / "kronkers"), "build", "--env", "env.test.yaml", "--partially", SELECTION,
           "--env--out", str(out), *(["--scheduler", scheduler] if scheduler else []), *args]
    return subprocess.Popen(cmd, cwd=project, env={**ploomber_env(), "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen, timeout: float = 900) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"kronkers build exited {proc.returncode}:\n{output[-5000:]}"
    return output


@pytest.fixture(scope="module")
def first_build(project, cluster, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cluster-out")
    finished(kronkers_build(project, out, cluster))
    return out


def test_cluster_build_runs_independent_tasks_on_two_workers(first_build):
    runs = read_runs(first_build)
    assert {r["task"] for r in runs} == TASKS and all(r["status"] == "ok" for r in runs), runs
    assert len(runs) == len(TASKS)
    assert all(r["worker"].startswith("tcp://127.0.0.1:") and r["end"] >= r["start"] for r in runs)
    assert len({r["pid"] for r in runs}) == 2, f"expected both workers to run tasks: {runs}"
    by = {r["task"]: r for r in runs}
    assert by["check-demand-data"]["start"] >= by["get-demand-data"]["end"], "check-demand-data started before its upstream ended"
    # the two independent tasks overlapped in time: they ran at once
    assert by["get-service-data"]["start"] < by["get-demand-data"]["end"] and by["get-demand-data"]["start"] < by["get-service-data"]["end"]
    assert not list((first_build / RUNNING_DIR).glob("*.json"))
    status = json.loads((first_build / "build" / "status.json").read_text())      # written by the pipeline's own hook
    assert status["status"] == "ok" and status["this_build"]["tasks"] == len(TASKS), status


def test_cluster_products_are_a_local_builds(project, first_build, built):
    assert_products_are_a_local_builds(first_build, project, built)


def test_second_build_submits_nothing(project, cluster, first_build):
    before = read_runs(first_build)
    output = finished(kronkers_build(project, first_build, cluster))
    assert "nothing submitted" in output
    assert read_runs(first_build) == before
    # a local build (`kronkers build` without --scheduler is `ploomber build`) finds the cluster's products up to date
    output = finished(kronkers_build(project, first_build, None))
    ran = re.findall(r"^(\S+)\s+(True|False)\s+[\d.]+", output, flags=re.M)
    assert sorted(n for n, _ in ran) == sorted(TASKS) and all(r == "False" for _, r in ran), output[-3000:]


def test_touched_notebook_reruns_it_and_downstream_through_a_lost_worker(project, cluster, first_build, built):
    """Edit get-demand-data's notebook (prose only: Ploomber tracks the whole source), build, and kill the worker
    running it mid-task: it runs again on another worker process, then its downstream check; get-service-data
    does not run; products stay a local build's."""
    nb_path = project / "nbs/pipeline/demand/demand_data.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["A note added after the first build."]})
    nb_path.write_text(json.dumps(nb, indent=1) + "\n")
    before = len(read_runs(first_build))
    proc = kronkers_build(project, first_build, cluster)
    marker = first_build / RUNNING_DIR / "get-demand-data.json"
    try:
        running = wait_for(lambda: marker.exists() and json.loads(marker.read_text() or "null"), "get-demand-data to start")
        log = first_build / "build/logs/get-demand-data.log"
        wait_for(lambda: log.exists() and "Executing" in log.read_text(errors="replace"), "the notebook to run", 300)
        os.kill(running["pid"], signal.SIGKILL)                     # the worker process, mid-task
        output = finished(proc)
    finally:
        if proc.poll() is None: proc.kill()
    runs = read_runs(first_build)[before:]
    assert [(r["task"], r["status"]) for r in runs] == [("get-demand-data", "lost"), ("get-demand-data", "ok"),
                                                        ("check-demand-data", "ok")], output
    assert runs[0]["pid"] == running["pid"] and runs[1]["pid"] != running["pid"]
    assert_products_are_a_local_builds(first_build, project, built)
    assert not list((first_build / RUNNING_DIR).glob("*.json"))


def test_failing_task_fails_the_build_naming_it(project, cluster, tmp_path):
    "check-demand-data without its upstream products fails in its notebook: the build exits 1 naming the task."
    out = tmp_path / "out"
    cmd = [str(BIN / "kronkers"), "build", "--scheduler", cluster, "--env", "env.test.yaml", "--partially",
           "check-demand-data", "--skip-upstream", "--retries", "0", "--env--out", str(out)]
    done = subprocess.run(cmd, cwd=project, env={**ploomber_env(), "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "build failed: task 'check-demand-data' failed" in done.stderr
    assert [(r["task"], r["status"]) for r in read_runs(out)] == [("check-demand-data", "failed")]
    status = json.loads((out / "build" / "status.json").read_text())
    assert status["status"] == "failed" and [f["task"] for f in status["failed"]] == ["check-demand-data"], status
    assert not (out / "monitoring/quality/.demand.json.metadata").exists()      # nothing counts as built
