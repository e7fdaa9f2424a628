"""Shared fixtures: the tiny pipeline build (env.test.yaml) into a temporary folder, once per session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ploomber_env() -> dict[str, str]:
    "Environment for a ploomber subprocess: the test env file, no telemetry."
    env = dict(os.environ)
    env.update(PLOOMBER_ENV_FILENAME="env.test.yaml", PLOOMBER_STATS_ENABLED="false",
               PLOOMBER_VERSION_CHECK_DISABLED="1", PYDEVD_DISABLE_FILE_VALIDATION="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.pop("MPLBACKEND", None)  # notebooks draw inline; a non-interactive backend would drop their plots
    return env


def ploomber_build(out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    "Run `ploomber build` on env.test.yaml with products under `out`; extra args go to ploomber."
    cmd = [str(BIN / "ploomber"), "build", "--entry-point", "pipeline.yaml", "--env--out", str(out), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=ploomber_env(), capture_output=True, text=True, timeout=1800)
    if check and done.returncode != 0:
        raise AssertionError(f"ploomber build failed ({done.returncode}):\n{done.stdout[-5000:]}\n{done.stderr[-10000:]}")
    return done


def cell_outputs(notebook: Path) -> list[dict]:
    "Every output of the code cells of an executed notebook."
    cells = json.loads(notebook.read_text())["cells"]
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]


def error_outputs(notebook: Path) -> list[dict]:
    "The error outputs of an executed notebook (a cell that raised)."
    return [o for o in cell_outputs(notebook) if o["output_type"] == "error"]


def image_outputs(notebook: Path) -> list[dict]:
    "The PNG plots an executed notebook shows."
    return [o for o in cell_outputs(notebook) if "image/png" in o.get("data", {})]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    "Products of one full build of the tiny pipeline."
    out = tmp_path_factory.mktemp("outputs")
    ploomber_build(out)
    return out
