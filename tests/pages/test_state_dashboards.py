"""Dashboards hold no memory for long and show no token: deploy/dashboards (what `make dashboards` and the
kronkers-dashboards unit run) starts a real Voila that culls idle kernels, with its token in a 0600 file, not in `ps`."""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def dashboards(tmp: Path, outputs: Path | None = None, **settings: str):
    """deploy/dashboards on a free port with `settings` (KRONKERS_DASHBOARD_* without the prefix), its state under
    `tmp`, the pages reading `outputs` (default: an empty folder, no build yet); yields (process, base url, token)."""
    port = free_port()
    env = {**os.environ, "KRONKERS_STATE_DIR": str(tmp / "state"), "KRONKERS_OUTPUTS": str(outputs or tmp / "outputs"),
           "KRONKERS_DASHBOARD_PORT": str(port), "PYTHONPATH": str(ROOT),
           **{f"KRONKERS_DASHBOARD_{k.upper()}": v for k, v in settings.items()}}
    env.pop("MPLBACKEND", None)
    if outputs is None:
        (tmp / "outputs").mkdir(exist_ok=True)              # the pages say there is no build yet
    log = tmp / "voila.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(ROOT / "deploy" / "dashboards")], cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                httpx.get(f"{base}/voila/static/voila.js", timeout=2); break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        yield psutil.Process(proc.pid), base, (tmp / "state" / "dashboard.token").read_text()
    finally:
        proc.terminate()
        try: proc.wait(timeout=30)
        except subprocess.TimeoutExpired: proc.kill()


def kernels(voila: psutil.Process) -> list[psutil.Process]:
    "The live kernels under Voila: a culled kernel not yet reaped (a zombie) or gone meanwhile is not held."
    held = []
    for p in voila.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()): held.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess): pass
    return held


def test_idle_kernels_are_culled_and_the_token_is_not_on_the_command_line(tmp_path):
    with dashboards(tmp_path, pool="0", cull_idle_s="8", cull_interval_s="1") as (voila, base, token):
        assert token and token not in " ".join(voila.cmdline())
        assert (tmp_path / "state" / "dashboard.token").stat().st_mode & 0o777 == 0o600
        assert "KRONKERS_DASHBOARD_TOKEN" not in voila.environ() and "JUPYTER_TOKEN" not in voila.environ()
        assert httpx.get(f"{base}/voila/render/overview.ipynb", timeout=120).status_code in (302, 401, 403)
        for _ in range(2):
            page = httpx.get(f"{base}/voila/render/overview.ipynb?token={token}", timeout=300)
            assert page.status_code == 200
            assert kernels(voila), "a visit runs the page in a kernel"
        deadline = time.monotonic() + 120
        while kernels(voila):
            assert time.monotonic() < deadline, f"{len(kernels(voila))} kernels still held after 120 s"
            time.sleep(1)
        assert "Culling 'idle' kernel" in (tmp_path / "voila.log").read_text()


def test_a_given_token_is_written_to_the_private_file_and_used(tmp_path):
    with dashboards(tmp_path, pool="0", token="given-token-1234") as (voila, base, token):
        assert token == "given-token-1234" and "given-token-1234" not in " ".join(voila.cmdline())
        assert "given-token-1234" not in "".join(voila.environ().values())
        assert httpx.get(f"{base}/voila/render/overview.ipynb?token=wrong", timeout=120).status_code in (302, 401, 403)


def test_the_kernels_held_are_bounded_the_longest_idle_gives_way_and_a_busy_bound_answers_503(tmp_path):
    with dashboards(tmp_path, pool="0", cull_idle_s="0", max_kernels="1") as (voila, base, token):
        page = f"{base}/voila/render/overview.ipynb?token={token}"
        assert httpx.get(page, timeout=300).status_code == 200
        first = {k.pid for k in kernels(voila)}
        assert len(first) == 1
        refused = httpx.get(page, timeout=300)                 # the only kernel was active a moment ago
        assert refused.status_code == 503 and "try again" in refused.text, refused.text[-500:]
        assert {k.pid for k in kernels(voila)} == first
        time.sleep(11)                                         # idle longer than BoundedKernelManager.evict_idle_s
        assert httpx.get(page, timeout=300).status_code == 200
        now = {k.pid for k in kernels(voila)}
        assert len(now) == 1 and now != first, "the idle kernel gave way to the new visit"
        assert "At the bound of 1 kernels: shutting down kernel" in (tmp_path / "voila.log").read_text()
