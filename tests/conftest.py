"""Shared fixtures: the tiny pipeline build (env.test.yaml) into a temporary folder, once per session."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from kronkers_ml.products import product_path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def fresh_mlflow_uris():
    "After each test, MLflow's process-wide tracking and registry URIs are unset: one test's store never leaks into the next."
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None); mlflow.set_registry_uri(None)


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


def product_at(out: Path, key: str) -> Path:
    "Where the declared product `key` (kronkers_ml.products) lives under the outputs folder `out`."
    return product_path(key, out)


def registered_scores(out: Path, purchases, h, rows):
    """Scores (customers of `rows` x items) of the recommendations model registered by the build in `out`, from the
    library's functions (not the served class): EASE, or the re-ranker on `purchases` (with order and revenue)."""
    from kronkers_ml.recommendations.evaluate import load_model, load_ranker, load_segments, reranked_scores
    from kronkers_ml.recommendations.models import ease_scores
    m = load_model(product_at(out, "recommendations.model"))
    spec = json.loads(product_at(out, "recommendations.history_spec").read_text())
    if spec.get("kind", "ease") == "ease":
        return ease_scores(h, rows, m["b"], m["repeat_weight"])
    return reranked_scores(h, purchases, rows, m["b"], m["repeat_weight"], load_ranker(product_at(out, "recommendations.ranker")),
                           spec["n_candidates"], load_segments(product_at(out, "recommendations.segments")), spec["season_days"])


def free_port() -> int:
    "A TCP port free on 127.0.0.1 now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120, what: str = "the server",
            ready=lambda r: r.status_code == 200) -> None:
    """Wait until `url` answers (`ready` of the response: 200 by default); AssertionError with the end of `log` when
    the process `proc` exits first or `timeout_s` passes."""
    import httpx
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {Path(log).read_text()[-3000:]}")
        try:
            if ready(httpx.get(url, timeout=2)): return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} was not up in {timeout_s:.0f} s: {Path(log).read_text()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def running_service(args: list[str], log: Path, env: dict | None = None, timeout_s: float = 60):
    "`kronkers serve ARGS` on a free port, logging to the file `log`; yields an httpx client once /ready is 200."
    import httpx
    port = free_port()
    with open(log, "w") as out:        # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen([str(BIN / "kronkers"), "serve", "--port", str(port), *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/ready", proc, log, timeout_s, "the service")
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()


VOILA_LOGS: dict[str, Path] = {}                    # base url -> log of the Voila serving it, quoted when a page fails


@contextmanager
def voila(out: Path, timeout_s: float = 120, preheat: bool = True, pool_size: int = 1, service_url: str | None = None,
          preheat_only: str | None = None):
    """Voila serving reports/ as `make dashboards` runs it, on a free local port with `out` as the outputs folder;
    yields (base url, token). With `preheat`, `pool_size` kernels per page have run the page before a visit (only the
    pages whose name starts with `preheat_only`, when given: the others get a kernel per visit). `service_url`: the
    model service the try-it pages ask."""
    port, token = free_port(), "test-" + os.urandom(8).hex()
    env = {**os.environ, "KRONKERS_OUTPUTS": str(out), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if service_url: env["KRONKERS_SERVICE_URL"] = service_url
    env.pop("MPLBACKEND", None)
    log_path = Path(tempfile.mkdtemp(prefix="voila-")) / "voila.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(BIN / "voila"), "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}",
                             f"--token={token}", "--show_tracebacks=True",
                             *(["--preheat_kernel=True", f"--pool_size={pool_size}"] if preheat else []),
                             *([f"--VoilaKernelManager.preheat_denylist=^(?!{preheat_only})"] if preheat and preheat_only else []),
                             "--Voila.tornado_settings={'websocket_max_message_size': 268435456}",   # as deploy/dashboards
                             str(ROOT / "reports")],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    VOILA_LOGS[base] = log_path
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{base}/voila/static/voila.js", timeout=2)
                break
            except urllib.error.HTTPError:   # answering: up
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"Voila did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.3)
        yield base, token
    finally:
        proc.terminate()
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


def bomb_png(side: int = 12_000) -> bytes:
    "A black grayscale PNG of side x side pixels, compressed row by row: a few hundred KB that decode to side**2 bytes."
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    comp, row = zlib.compressobj(9), b"\0" * (side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


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
