"""deploy/ on a fresh server: every command line of the cron file, the nightly script, the systemd units and the
install script starts from a fresh clone of the repository; the units pass `systemd-analyze verify`; the install
merges into an existing crontab without clobbering it. The schedule itself (cron or systemd firing at 02:00) cannot
run here: the tests run each command the schedule would run."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from kronkers_ml.platform.access import create_key, load_roles
from kronkers_ml.returns.batch import build_parser as batch_parser

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service")) + sorted((ROOT / "deploy" / "systemd").glob("*.timer"))

FAKE_CRONTAB = """#!/bin/sh
# a stand-in for crontab(1): the table lives in $FAKE_CRONTAB_FILE
f="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) [ -f "$f" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat "$f" ;;
  -) cat > "$f" ;;
  *) echo "fake crontab: unexpected $*" >&2; exit 2 ;;
esac
"""
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
exit ${STUB_EXIT:-0}
"""


def fresh_clone(dest: Path, venv: str = "real") -> Path:
    "A `git clone` of the repository at `dest`; its .venv is the test's venv ('real'), stubs that log their calls ('stub'), or none."
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=120)
    assert not (dest / "outputs").exists() and not (dest / "state").exists() and not (dest / "logs").exists()
    if venv == "real":
        (dest / ".venv").symlink_to(VENV)
    elif venv == "stub":
        (dest / ".venv" / "bin").mkdir(parents=True)
        for tool in ("kronkers", "kronkers-returns-batch", "kronkers-monitor"):
            write_exe(dest / ".venv" / "bin" / tool, STUB)
    return dest


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def base_env(tmp: Path, clone: Path, **extra: str) -> dict[str, str]:
    "A bare environment as cron gives one (PATH /usr/bin:/bin), plus `extra`; the clone's package first on the path."
    return {"PATH": f"{tmp / 'bin'}:/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", "PYTHONPATH": str(clone), **extra}


def cron_jobs(text: str) -> list[tuple[str, str]]:
    "(schedule, command) of each job line of a crontab (comments, blank lines and VAR=value lines left out)."
    jobs = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            continue
        fields = line.split(None, 5)
        jobs.append((" ".join(fields[:5]), fields[5]))
    return jobs


def install_cron(clone: Path, tmp: Path, table: Path) -> subprocess.CompletedProcess:
    env = base_env(tmp, clone, CRONTAB=str(write_exe(tmp / "bin" / "crontab", FAKE_CRONTAB)), FAKE_CRONTAB_FILE=str(table),
                   KRONKERS_STATE_DIR=str(clone / "state"))
    return subprocess.run([str(clone / "deploy" / "install"), "--cron"], env=env, capture_output=True, text=True, timeout=120)


def test_crontab_has_one_nightly_job_and_sets_no_variable():
    text = (ROOT / "deploy" / "crontab").read_text()
    assert cron_jobs(text) == [("0 2 * * *", "/opt/kronkers-ml/deploy/nightly --log /opt/kronkers-ml/logs/nightly.log")]
    assert not [l for l in text.splitlines() if re.match(r"^\s*[A-Za-z_]+\s*=", l)], \
        "a variable in the merged block would apply to the user's other cron lines"


def test_install_merges_into_an_existing_crontab_and_running_it_again_changes_nothing(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml")
    table = tmp_path / "crontab.txt"
    mine = "MAILTO=ops@example.com\n*/5 * * * * /usr/local/bin/backup --quiet\n# my own note\n"
    table.write_text(mine)
    first = install_cron(clone, tmp_path, table)
    assert first.returncode == 0, first.stderr
    after = table.read_text()
    assert after.startswith(mine), "the user's lines are kept, in place"
    assert after.count(">>> kronkers-ml") == 1 and after.count("<<< kronkers-ml") == 1
    assert cron_jobs(after) == [("*/5 * * * *", "/usr/local/bin/backup --quiet"),
                                ("0 2 * * *", f"{clone}/deploy/nightly --log {clone}/logs/nightly.log")]
    assert install_cron(clone, tmp_path, table).returncode == 0
    assert table.read_text() == after, "a second install changes nothing"
    assert (clone / "state" / "reload.key").stat().st_mode & 0o777 == 0o600
    assert (clone / "state").stat().st_mode & 0o777 == 0o700


def test_install_on_a_user_without_a_crontab(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml")
    table = tmp_path / "crontab.txt"
    done = install_cron(clone, tmp_path, table)
    assert done.returncode == 0, done.stderr
    assert len(cron_jobs(table.read_text())) == 1


def run_cron_line(clone: Path, tmp: Path, table: Path, **extra: str) -> subprocess.CompletedProcess:
    "The installed cron job's command, run by /bin/sh in cron's bare environment, with stub tools that log their calls."
    (_, command), = cron_jobs(table.read_text())
    write_exe(tmp / "bin" / "make", STUB)
    env = base_env(tmp, clone, CALLS=str(tmp / "calls.txt"), RETURNS_INBOX=str(tmp / "inbox"),
                   RETURNS_RESULTS=str(tmp / "warehouse" / "results.csv"), **extra)
    return subprocess.run(["/bin/sh", "-c", command], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def test_the_cron_line_runs_the_nightly_jobs_in_order_from_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml", venv="stub")
    table = tmp_path / "crontab.txt"
    assert install_cron(clone, tmp_path, table).returncode == 0
    (tmp_path / "inbox").mkdir()
    done = run_cron_line(clone, tmp_path, table)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (clone / "logs" / "nightly.log").read_text()        # the folder it logs into did not exist: it made it
    assert "nightly: done" in log
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["make", "kronkers", "kronkers-returns-batch", "kronkers-monitor"]
    assert calls[0] == "make build" and calls[1] == "kronkers reload" and calls[3] == "kronkers-monitor --env-file env.yaml"
    args = batch_parser().parse_args(shlex.split(calls[2])[1:])
    assert args.input == str(tmp_path / "inbox") and args.output == str(tmp_path / "warehouse" / "results.csv")
    assert args.progress is False and (tmp_path / "warehouse").is_dir()


def test_a_failed_step_is_reported_and_the_later_steps_still_run(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml", venv="stub")
    table = tmp_path / "crontab.txt"
    assert install_cron(clone, tmp_path, table).returncode == 0
    done = run_cron_line(clone, tmp_path, table, STUB_EXIT="2")  # every tool fails; the inbox is missing
    assert done.returncode == 1
    log = (clone / "logs" / "nightly.log").read_text()
    assert "failed: pipeline reload monitor" in log and "batch: skipped, no inbox" in log
    assert [c.split()[0] for c in (tmp_path / "calls.txt").read_text().splitlines()] == ["make", "kronkers", "kronkers-monitor"]


def test_nightly_refuses_to_start_beside_a_running_one(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml", venv="stub")
    (clone / "state").mkdir(mode=0o700)
    with open(clone / "state" / "nightly.lock", "w") as held:
        import fcntl
        fcntl.flock(held, fcntl.LOCK_EX)
        done = subprocess.run([str(clone / "deploy" / "nightly"), "--steps", "reload"], env=base_env(tmp_path, clone),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "another nightly run" in done.stderr


@pytest.mark.parametrize("bound, warned", [("one below the pages", True), ("the pages", False), ("none", False)])
def test_dashboards_warn_when_the_kernel_bound_is_below_the_preheated_pool(tmp_path, bound, warned):
    clone = fresh_clone(tmp_path / "clone", venv="stub")
    pages = len(list((clone / "reports").glob("*.ipynb")))
    max_kernels = {"one below the pages": str(pages - 1), "the pages": str(pages), "none": "0"}[bound]
    write_exe(clone / ".venv" / "bin" / "voila", STUB)            # records its arguments instead of serving
    env = {**os.environ, "CALLS": str(tmp_path / "calls"), "KRONKERS_DASHBOARD_TOKEN": "t", "KRONKERS_DASHBOARD_POOL": "1",
           "KRONKERS_DASHBOARD_MAX_KERNELS": max_kernels}
    r = subprocess.run([str(clone / "deploy" / "dashboards")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ("is below the preheated pool" in r.stderr) == warned, r.stderr
    if warned:
        assert f"({pages} pages x KRONKERS_DASHBOARD_POOL=1)" in r.stderr and f"at least {pages + 2}" in r.stderr
    assert f"--BoundedKernelManager.max_kernels={max_kernels}" in (tmp_path / "calls").read_text()


@pytest.mark.parametrize("script", ["install", "nightly", "dashboards"])
def test_every_deploy_script_answers_help_from_a_fresh_clone(tmp_path, script):
    clone = fresh_clone(tmp_path / "kronkers-ml", venv="none")
    done = subprocess.run([str(clone / "deploy" / script), "--help"], env=base_env(tmp_path, clone), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: deploy/{script}")
    bad = subprocess.run([str(clone / "deploy" / script), "--nonsense"], env=base_env(tmp_path, clone), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_the_tools_the_nightly_job_runs_start_from_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml")
    for tool in (["kronkers", "reload"], ["kronkers-returns-batch"], ["kronkers-monitor"]):
        done = subprocess.run([str(clone / ".venv" / "bin" / tool[0]), *tool[1:], "--help"], cwd=clone,
                              env=base_env(tmp_path, clone), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    # no service listens: the reload step says so and the night goes on
    done = subprocess.run([str(clone / "deploy" / "nightly"), "--steps", "reload"], cwd=tmp_path,
                          env=base_env(tmp_path, clone, KRONKERS_SERVICE_URL=f"http://127.0.0.1:{free_port()}",
                                       KRONKERS_RELOAD_KEY="kk_000000000000_x"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no service listening" in done.stdout, done.stdout + done.stderr


def installed_units(clone: Path, tmp: Path) -> Path:
    units = tmp / "units"
    env = base_env(tmp, clone, SYSTEMCTL=str(write_exe(tmp / "bin" / "systemctl", STUB)), CALLS=str(tmp / "calls.txt"))
    done = subprocess.run([str(clone / "deploy" / "install"), "--systemd", "--unit-dir", str(units),
                           "--user", os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp / "calls.txt").read_text().splitlines() == [
        "systemctl daemon-reload",
        "systemctl enable --now kronkers-nightly.timer kronkers-service.service kronkers-dashboards.service"]
    return units


def unit_lines(path: Path, key: str) -> list[str]:
    return [l.split("=", 1)[1] for l in path.read_text().splitlines() if l.startswith(key + "=")]


def test_units_are_installed_for_the_clone_and_pass_systemd_analyze_verify(tmp_path):
    clone = fresh_clone(tmp_path / "kronkers-ml")
    units = installed_units(clone, tmp_path)
    assert sorted(p.name for p in units.iterdir()) == sorted(p.name for p in UNITS)
    for unit in units.iterdir():
        text = unit.read_text()
        assert "/opt/kronkers-ml" not in text
        for key in ("ExecStart", "ExecStartPre", "ExecReload"):
            for line in unit_lines(unit, key):
                exe = shlex.split(line)[0]
                assert os.access(exe, os.X_OK), f"{unit.name}: {key} {exe} is not executable"
        if unit.suffix == ".timer":
            assert (units / unit.name.replace(".timer", ".service")).exists()
    assert unit_lines(units / "kronkers-nightly.timer", "OnCalendar") == ["*-*-* 02:00:00"]
    assert unit_lines(units / "kronkers-nightly.service", "ExecStart") == [f"{clone}/deploy/nightly"]
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed; the units were parsed and their commands checked")
    done = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(units.iterdir()))], capture_output=True,
                          text=True, timeout=120, cwd=units)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_the_service_unit_starts_the_service_and_its_reload_and_the_nightly_reload_swap_in_the_champions(tmp_path, built):
    "ExecStart of kronkers-service.service run as systemd would (its folder, its environment file), on a copy of the tiny build."
    clone = fresh_clone(tmp_path / "kronkers-ml")
    units = installed_units(clone, tmp_path)
    shutil.copytree(built, clone / "outputs")
    port = free_port()
    (clone / ".env").write_text(f"KRONKERS_SERVICE_URL=http://127.0.0.1:{port}\n")
    service = units / "kronkers-service.service"
    env = base_env(tmp_path, clone, **{k: v for k, v in (l.split("=", 1) for l in (clone / ".env").read_text().split())})
    for pre in unit_lines(service, "ExecStartPre"):
        subprocess.run(shlex.split(pre), check=True, env=env, cwd=clone, timeout=60)
    start = shlex.split(unit_lines(service, "ExecStart")[0].replace("--port 8000", f"--port {port}"))
    with open(tmp_path / "service.log", "w") as log:
        proc = subprocess.Popen(start, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
            try:
                # loaded (the tiny build promotes no returns model, so /ready itself stays 503 on it)
                if "service-time" in httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).json()["models"]: break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "service.log").read_text()[-3000:]
            time.sleep(0.2)
        assert (clone / "state" / "reload.key").exists() and (clone / "state").stat().st_mode & 0o777 == 0o700
        reload = shlex.split(unit_lines(service, "ExecReload")[0].replace(":8000", f":{port}"))
        done = subprocess.run(reload, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and '"models"' in done.stdout, done.stdout + done.stderr
        done = subprocess.run([str(clone / "deploy" / "nightly"), "--steps", "reload"], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0 and "reload: exit 0" in done.stdout, done.stdout + done.stderr
        key = create_key(clone / "state" / "keys.json", "operations", load_roles(clone / "config" / "roles.yaml"))[1]
        assert httpx.post(f"http://127.0.0.1:{port}/v1/admin/reload", headers={"X-API-Key": key}).status_code == 403
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()
