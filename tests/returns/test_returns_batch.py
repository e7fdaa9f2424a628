"""The returns batch job as it runs at night: the console script on real PNG files with a real torch model, killed
with SIGKILL part-way and run again, fed broken files, odd names, links out of the inbox and decompression bombs,
refused while another run holds the lock, following the registry's champion of a real MLflow store, and pushing its
metrics to a real Prometheus Pushgateway."""
from __future__ import annotations

import json
import os
import shutil
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, ROOT, bomb_png, error_outputs, free_port, image_outputs, product_at
from kronkers_ml.returns.batch import (COLUMNS, EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_PUSH_FAILED, build_parser, main,
                                       name_field, read_results, results_lock, scan_inbox)
from kronkers_ml.returns.model import CATEGORIES, build_classifier, load_classifier, save_classifier

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"


def make_inbox(folder: Path, n: int, seed: int = 0, start: int = 0) -> list[str]:
    "n small grayscale PNGs (seeded noise), some in a sub-folder; their relative paths."
    rng = np.random.default_rng(seed)
    names = []
    for k in range(start, start + n):
        name = f"{'station2/' if k % 4 == 3 else ''}item{k:04d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    "A real, untrained EfficientNet-Lite0 saved by the returns model's save_classifier (what --model reads)."
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_classifier(build_classifier("efficientnet_lite0", n_classes=len(CATEGORIES), pretrained=False), path)
    return path


def job(model_file, inbox: Path, results: Path, *extra: str) -> list[str]:
    return [str(BIN / "kronkers-returns-batch"), "--input", str(inbox), "--output", str(results),
            "--model", str(model_file), "--no-progress", *extra]


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KRONKERS_PUSHGATEWAY_URL", None)
    env.pop("KRONKERS_RETURNS_SCHEDULER", None)
    return env


def run_job(model_file, inbox, results, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(job(model_file, inbox, results, *extra), env=job_env(), capture_output=True, text=True,
                          timeout=600)


def data_rows(results: Path) -> int:
    "Complete rows in the results file (lines after the header)."
    return max(results.read_bytes().count(b"\n") - 1, 0) if results.exists() else 0


def test_help_lists_every_option():
    done = subprocess.run([str(BIN / "kronkers-returns-batch"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--input", "--output", "--model", "--loader", "--batch-size", "--review-threshold",
                   "--pushgateway", "--job-name", "--summary-json", "--no-progress", "--scheduler", "--shard-size",
                   "exit codes"):
        assert option in done.stdout, option


def test_killed_run_resumes_with_exactly_one_row_per_image(model_file, tmp_path):
    inbox, results = tmp_path / "inbox", tmp_path / "out" / "results.csv"
    inbox.mkdir()
    names = make_inbox(inbox, 80)
    png = (inbox / names[0]).read_bytes()
    for odd in (b"x\xff.png", b"two\nlines.png", b"station2/caf\xc3\xa9 \\ \"quoted\",.png"):
        Path(os.fsdecode(os.fsencode(inbox) + b"/" + odd)).write_bytes(png)
        names.append(name_field(os.fsdecode(odd)))
    first = subprocess.Popen(job(model_file, inbox, results, "--batch-size", "5"), env=job_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while data_rows(results) < 15 and first.poll() is None:      # wait for three batches on disk
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, f"the job ended before it was killed: {first.stderr.read()!r}"
    written = data_rows(results)
    assert 15 <= written < len(names), written
    # the lock file of the killed run is left behind; its flock died with the process
    assert (results.parent / "results.csv.lock").exists()
    second = run_job(model_file, inbox, results, "--batch-size", "5")
    assert second.returncode == EXIT_OK, second.stderr
    assert f"{len(names) - written} processed" in second.stdout and f"{written} already done" in second.stdout
    table = read_results(results)
    assert list(table.columns) == COLUMNS
    assert sorted(table.file) == sorted(names) and table.file.is_unique
    assert (table.status == "ok").all() and table.confidence.between(0.2, 1).all()
    assert set(table.category) <= set(CATEGORIES)
    assert (table.model_version == load_classifier(model_file).version).all()
    assert (table.needs_review == (table.confidence < 0.9)).all()
    assert pd.to_datetime(table.processed_at).dt.tz is not None
    # a third run has nothing to do and writes nothing
    before = results.read_bytes()
    third = run_job(model_file, inbox, results)
    assert third.returncode == EXIT_OK and "0 processed" in third.stdout and results.read_bytes() == before


def test_torn_last_line_is_dropped_and_its_images_redone(model_file, tmp_path):
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    names = make_inbox(inbox, 8)
    assert run_job(model_file, inbox, results, "--batch-size", "4").returncode == EXIT_OK
    # cut the file inside its last row, as a kill during a batch's write would
    text = results.read_bytes()
    last_start = text.rstrip(b"\n").rfind(b"\n") + 1
    with open(results, "r+b") as f:
        f.truncate(last_start + (len(text) - last_start) // 2)
    assert not results.read_bytes().endswith(b"\n")
    names += make_inbox(inbox, 3, seed=1, start=100)
    done = run_job(model_file, inbox, results, "--batch-size", "4")
    assert done.returncode == EXIT_OK, done.stderr
    assert "4 processed" in done.stdout                            # the torn row's image and the 3 new ones
    table = read_results(results)
    assert sorted(table.file) == sorted(names) and table.file.is_unique and table.sha256.str.len().eq(64).all()


def test_broken_files_become_error_rows_and_the_job_goes_on(model_file, tmp_path):
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    good = make_inbox(inbox, 6)
    png = (inbox / good[0]).read_bytes()
    (inbox / "empty.png").write_bytes(b"")
    (inbox / "truncated.png").write_bytes(png[: len(png) // 2])
    (inbox / "notes.txt").write_text("customer says the zip is broken\n")
    (inbox / "garbage.jpg").write_bytes(bytes(range(256)) * 4)
    middle = len(png) // 2                                          # inside the pixel data: its checksum fails
    (inbox / "bad_crc.png").write_bytes(png[:middle] + bytes([png[middle] ^ 0xFF]) + png[middle + 1:])
    (inbox / "bad_chunk.png").write_bytes(png[:37] + b"zzzz" + png[41:])  # a broken chunk header
    (inbox / ".uploading.png").write_bytes(png[:10])                # hidden: an upload in progress, skipped
    done = run_job(model_file, inbox, results, "--batch-size", "4")
    assert done.returncode == EXIT_OK, done.stderr
    assert "12 processed (6 ok, 6 errors)" in done.stdout
    table = read_results(results).set_index("file")
    errors = table[table.status == "error"]
    assert sorted(errors.index) == ["bad_chunk.png", "bad_crc.png", "empty.png", "garbage.jpg", "notes.txt", "truncated.png"]
    assert errors.needs_review.all() and (errors.category == "").all() and errors.confidence.isna().all()
    assert errors.loc["empty.png", "error"] == "empty file (0 bytes)"
    assert errors.loc["notes.txt", "error"] == "not an image (unknown format)"
    assert errors.loc["garbage.jpg", "error"] == "not an image (unknown format)"
    assert errors.loc["truncated.png", "error"].startswith("corrupt PNG file")
    assert errors.loc["bad_crc.png", "error"].startswith("corrupt PNG file")
    assert errors.loc["bad_chunk.png", "error"] == "corrupt PNG file: Pillow cannot read it"
    assert (table.loc[good, "status"] == "ok").all()


def test_second_run_is_refused_while_the_lock_is_held(model_file, tmp_path):
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    make_inbox(inbox, 5)
    with results_lock(results):                                     # this process holds it
        refused = run_job(model_file, inbox, results)
    assert refused.returncode == EXIT_LOCKED
    assert f"held by another run (pid {os.getpid()})" in refused.stderr
    assert not results.exists()                                     # the refused run wrote nothing
    # a holder killed with SIGKILL leaves its lock file, but not its lock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom kronkers_ml.returns.batch import results_lock\n"
                               f"with results_lock({str(results)!r}):\n    print('locked', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert run_job(model_file, inbox, results).returncode == EXIT_LOCKED
    holder.kill()
    holder.wait(timeout=60)
    after = run_job(model_file, inbox, results)
    assert after.returncode == EXIT_OK, after.stderr
    assert len(read_results(results)) == 5


@pytest.fixture
def pushgateway(tmp_path):
    "A real Prometheus Pushgateway on a free local port; yields its address HOST:PORT."
    if not Path(PUSHGATEWAY).exists():
        pytest.skip("prometheus-pushgateway is not installed (make system-deps installs the Debian package)")
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address={address}",
                             f"--persistence.file={tmp_path / 'pushgateway.data'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"pushgateway exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{address}/-/ready", timeout=1) as r:
                    if r.status == 200: break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("pushgateway did not become ready")
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scrape(address: str, job: str) -> dict[tuple[str, tuple], float]:
    "Samples of the gateway's /metrics pushed under `job`, keyed by (name, labels without job/instance)."
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") == job:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))
                samples[(s.name, labels)] = s.value
    return samples


def test_metrics_reach_a_real_pushgateway(model_file, tmp_path, pushgateway):
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    make_inbox(inbox, 13)
    (inbox / "empty.png").write_bytes(b"")
    started = time.time()
    done = run_job(model_file, inbox, results, "--batch-size", "5", "--pushgateway", pushgateway,
                   "--job-name", "returns_test")
    assert done.returncode == EXIT_OK, done.stderr
    table = read_results(results)
    m = scrape(pushgateway, "returns_test")
    assert m[("kronkers_returns_batch_images_processed", ())] == 14
    assert m[("kronkers_returns_batch_images_errors", ())] == 1
    assert m[("kronkers_returns_batch_images_needs_review", ())] == table.needs_review.sum()
    counts = table[table.status == "ok"].category.value_counts()
    for category in CATEGORIES:
        assert m[("kronkers_returns_batch_category_images", (("category", category),))] == counts.get(category, 0)
    assert m[("kronkers_returns_batch_batch_seconds_count", ())] == 3
    assert m[("kronkers_returns_batch_batch_seconds_sum", ())] > 0
    assert m[("kronkers_returns_batch_last_success_unixtime", ())] >= int(started)
    # a second run replaces the group: nothing new processed
    assert run_job(model_file, inbox, results, "--pushgateway", pushgateway, "--job-name", "returns_test").returncode == 0
    assert scrape(pushgateway, "returns_test")[("kronkers_returns_batch_images_processed", ())] == 0


def test_failed_push_keeps_the_results_and_exits_4(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KRONKERS_PUSHGATEWAY_URL", raising=False)
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    make_inbox(inbox, 3)
    code = main(["--input", str(inbox), "--output", str(results), "--model", str(model_file), "--no-progress",
                 "--pushgateway", f"127.0.0.1:{free_port()}", "--summary-json", str(tmp_path / "summary.json")])
    assert code == EXIT_PUSH_FAILED
    assert "results written, but pushing metrics" in capsys.readouterr().err
    assert len(read_results(results)) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["processed"] == 3


def scheduled_args(line: str) -> list[str]:
    "The arguments given to kronkers-returns-batch in a crontab line or a systemd ExecStart line."
    words = shlex.split(line.split(">>")[0])
    start = next(i for i, w in enumerate(words) if w.endswith("/kronkers-returns-batch"))
    return words[start + 1:]


def test_the_schedule_runs_the_job_with_valid_options():
    "deploy/nightly (run by cron and by kronkers-nightly.service) runs the job after the pipeline; its options parse."
    lines = [l for l in (ROOT / "deploy" / "nightly").read_text().splitlines()
             if "kronkers-returns-batch" in l and "--input" in l and not l.lstrip().startswith("#")]
    assert len(lines) == 1
    args = build_parser().parse_args(scheduled_args(lines[0].replace('"$bin/kronkers-returns-batch"', "/bin/kronkers-returns-batch")
                                                    .split("||")[0].split("run batch ", 1)[1]))
    assert args.progress is False and args.input and args.output and args.batch_size == 10
    # the nightly run follows the registry's champion, not the last trained file
    assert args.model is None and args.out == "outputs"


def test_classify_returns_task_in_the_tiny_build(built):
    nb = built / "nb" / "classify-returns.ipynb"
    assert (built / "nb" / "classify-returns.html").stat().st_size > 0
    assert not error_outputs(nb), error_outputs(nb)
    assert len(image_outputs(nb)) >= 1
    inbox = scan_inbox(product_at(built, "returns.inbox"))
    table = read_results(product_at(built, "returns.batch.results"))
    assert len(inbox) > 0 and sorted(table.file) == inbox and table.file.is_unique
    summary = json.loads(product_at(built, "returns.batch.summary").read_text())
    assert summary["model_version"] == load_classifier(product_at(built, "returns.model")).version
    assert (table.model_version == summary["model_version"]).all()
    assert summary["photos"] == len(inbox) == sum(summary["class_distribution"].values()) + summary["errors"]
    assert summary["needs_review"] == table.needs_review.sum()
    assert summary["review_share"] == pytest.approx(table.needs_review.mean())
    ok = table[table.status == "ok"]
    assert (ok.needs_review == (ok.confidence < summary["review_threshold"])).all()
    assert summary["class_distribution"] == {c: int((ok.category == c).sum()) for c in CATEGORIES}


# --- bad input of every kind: one clear error row each, the job goes on, a second run finds nothing to do ----------

def write_bomb(path: Path, side: int = 12_000) -> Path:
    "The bomb PNG of conftest.bomb_png written to `path`."
    path.write_bytes(bomb_png(side))
    return path


def test_odd_names_links_and_bombs_become_error_rows_and_the_job_goes_on(model_file, tmp_path):
    inbox, results, outside = tmp_path / "inbox", tmp_path / "results.csv", tmp_path / "elsewhere"
    inbox.mkdir(); outside.mkdir()
    good = make_inbox(inbox, 5)
    png = (inbox / good[0]).read_bytes()
    raw = os.fsencode(inbox)
    Path(os.fsdecode(raw + b"/x\xff.png")).write_bytes(png)            # not UTF-8: stopped every run before
    Path(os.fsdecode(raw + b"/two\nlines.png")).write_bytes(png)       # a newline: FileNotFoundError on the next run
    (outside / "secret.png").write_bytes(png)
    (inbox / "out.png").symlink_to(outside / "secret.png")             # out of the inbox: never followed
    (inbox / "in.png").symlink_to(good[1])                              # inside it: classified
    bomb = write_bomb(inbox / "bomb.png")
    assert bomb.stat().st_size < 1_000_000
    first = run_job(model_file, inbox, results, "--batch-size", "3", "--threads", "1")
    assert first.returncode == EXIT_OK, first.stderr
    assert "10 processed (8 ok, 2 errors)" in first.stdout, first.stdout
    text = results.read_bytes().decode("utf-8")                        # valid UTF-8, one line a row
    assert text.count("\n") == 11
    table = read_results(results).set_index("file")
    assert sorted(table.index) == sorted(good + ["x\\xff.png", "two\\nlines.png", "out.png", "in.png", "bomb.png"])
    assert table.loc["x\\xff.png", "status"] == table.loc["two\\nlines.png", "status"] == "ok"
    assert table.loc["in.png", "status"] == "ok" and table.loc["in.png", "sha256"] == table.loc[good[1], "sha256"]
    out = table.loc["out.png"]
    assert out.status == "error" and out.sha256 == "" and "outside the inbox: not followed" in out.error
    b = table.loc["bomb.png"]
    assert b.status == "error" and len(b.sha256) == 64 and b.error.startswith("PNG of 12000x12000 = 144,000,000 pixels")
    assert "over the limit of 16,000,000 pixels" in b.error
    # nothing is done twice, and nothing stops the next run
    second = run_job(model_file, inbox, results, "--threads", "1")
    assert second.returncode == EXIT_OK and "0 processed" in second.stdout and "10 already done" in second.stdout, second
    assert results.read_bytes().decode("utf-8") == text
    # a higher pixel limit is a setting: a replaced bomb of 3000x3000 is decoded under the default, refused under 1M
    write_bomb(inbox / "bomb.png", 3_000)
    third = run_job(model_file, inbox, results, "--threads", "1", "--max-pixels", "1000000")
    assert third.returncode == EXIT_OK and "1 processed (0 ok, 1 errors)" in third.stdout, third
    assert "over the limit of 1,000,000 pixels" in read_results(results).error.iloc[-1]


# --- the nightly run follows the registry ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    "A real MLflow store in an outputs folder with two versions of the returns model; version 1 is the champion."
    from kronkers_ml.platform.registry import register_version, set_champion
    from kronkers_ml.returns.family import log_returns_model
    from kronkers_ml.platform.tracking import artifact_root, log_training_run, tracking_uri, use_store
    out = tmp_path_factory.mktemp("outputs")
    uri = tracking_uri(out, environ={})
    use_store(uri, "returns", artifact_root(out))
    versions = {}
    for seed in (1, 2):
        path = out / f"m{seed}" / "model.pt"
        path.parent.mkdir()
        save_classifier(build_classifier("efficientnet_lite0", n_classes=len(CATEGORIES), pretrained=False, seed=seed), path)
        run = log_training_run("returns", {"seed": seed}, {"family": "returns", "primary_metric": "accuracy", "model": {"accuracy": 0.2},
                                                          "baselines": {}, "data": {"rows_train": 1, "rows_test": 1, "sha256": "x"}}, lambda: log_returns_model(path))
        versions[register_version(uri, "returns", run["model_uri"], run["run_id"])] = load_classifier(path).version
    first = sorted(versions)[0]
    set_champion(uri, "returns", first, "test", "first")
    return {"out": out, "uri": uri, "versions": versions}


def champion_job(inbox: Path, results: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = job_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "kronkers-returns-batch"), "--input", str(inbox), "--output", str(results), "--out", str(out),
           "--no-progress", "--summary-json", str(results.with_suffix(".json")), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_the_job_classifies_with_the_champion_and_follows_a_promotion(store, tmp_path):
    from kronkers_ml.platform.registry import rollback, set_champion
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    make_inbox(inbox, 4)
    v1, v2 = sorted(store["versions"])
    done = champion_job(inbox, results, store["out"])
    assert done.returncode == EXIT_OK, done.stderr
    summary = json.loads(results.with_suffix(".json").read_text())
    assert summary["registry_model"] == "returns" and summary["registry_version"] == v1 and summary["model_file"] is None
    assert f"registry returns version {v1}, the champion" in done.stdout
    assert (read_results(results).model_version == store["versions"][v1]).all()
    assert "warning" not in done.stderr.lower(), done.stderr                  # third-party warnings are not shown
    set_champion(store["uri"], "returns", v2, "test", "better")
    make_inbox(inbox, 3, seed=1, start=50)
    done = champion_job(inbox, results, store["out"])
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(results.with_suffix(".json").read_text())["registry_version"] == v2
    assert (read_results(results).model_version.iloc[-3:] == store["versions"][v2]).all()
    rollback(store["uri"], "returns", "test")                                 # an admin rolls back: the job follows
    make_inbox(inbox, 2, seed=2, start=80)
    assert champion_job(inbox, results, store["out"]).returncode == EXIT_OK
    assert (read_results(results).model_version.iloc[-2:] == store["versions"][v1]).all()


def test_a_store_without_a_champion_is_a_clear_error(tmp_path):
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    make_inbox(inbox, 2)
    done = champion_job(inbox, results, tmp_path / "empty-outputs")
    assert done.returncode == EXIT_FAILED
    assert "model 'returns' has no champion" in done.stderr and "kronkers models promote returns VERSION" in done.stderr
    assert "Traceback" not in done.stderr and data_rows(results) == 0


def test_threads_are_set_explicitly_and_reported(model_file, tmp_path):
    inbox, results = tmp_path / "inbox", tmp_path / "results.csv"
    inbox.mkdir()
    make_inbox(inbox, 2)
    done = run_job(model_file, inbox, results, "--threads", "1", "--summary-json", str(tmp_path / "s.json"))
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads((tmp_path / "s.json").read_text())["threads"] == 1
    env = {**job_env(), "OMP_NUM_THREADS": "2"}                               # the default follows OMP_NUM_THREADS
    done = subprocess.run(job(model_file, inbox, tmp_path / "r2.csv", "--summary-json", str(tmp_path / "s2.json")),
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == EXIT_OK and json.loads((tmp_path / "s2.json").read_text())["threads"] == 2
    bad = run_job(model_file, inbox, results, "--threads", "0")
    assert bad.returncode == 2 and "--threads must be at least 1" in bad.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    "A real Dask scheduler and two `dask worker` processes (one thread each) on 127.0.0.1, for the sharded runs."
    from kronkers_ml.platform.cluster import local_cluster
    with local_cluster(2, env={**job_env(), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                       logs=tmp_path_factory.mktemp("dask")) as address:
        yield address


def worker_pids(address: str) -> dict[str, int]:
    "{worker address: pid} of the cluster's worker processes."
    from distributed import Client
    with Client(address, timeout="60s") as client:
        return client.run(os.getpid)


def comparable(results: Path) -> pd.DataFrame:
    "The results without the time a row was written, in the order of the files."
    return read_results(results).drop(columns="processed_at").sort_values("file").reset_index(drop=True)


def sharded(model_file, inbox, results, address, summary, *extra) -> list[str]:
    return job(model_file, inbox, results, "--batch-size", "5", "--threads", "1", "--scheduler", address,
               "--summary-json", str(summary), *extra)


def test_shards_run_on_both_workers_with_the_results_of_one_process(model_file, cluster, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = make_inbox(inbox, 60) + ["broken.png"]
    (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a whole PNG")
    one = run_job(model_file, inbox, tmp_path / "one.csv", "--batch-size", "5", "--threads", "1")
    assert one.returncode == EXIT_OK, one.stderr
    results, summary = tmp_path / "sharded.csv", tmp_path / "summary.json"
    done = subprocess.run(sharded(model_file, inbox, results, cluster, summary, "--shard-size", "10"), env=job_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == EXIT_OK, done.stderr
    assert "61 processed (60 ok, 1 errors)" in done.stdout
    shards = json.loads(summary.read_text())["shards"]
    pids = worker_pids(cluster)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert all(s["status"] == "ok" for s in shards), shards
    assert {s["pid"] for s in shards} == set(pids.values())                  # both worker processes classified
    assert {s["worker"] for s in shards} == set(pids)
    assert sorted(s["shard"] for s in shards) == list(range(7)) and sum(s["written"] for s in shards) == 61
    assert sorted(read_results(results).file) == sorted(names)
    pd.testing.assert_frame_equal(comparable(results), comparable(tmp_path / "one.csv"))   # same labels, same confidence
    before = results.read_bytes()
    again = subprocess.run(sharded(model_file, inbox, results, cluster, summary), env=job_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == EXIT_OK and "0 processed" in again.stdout and "61 already done" in again.stdout
    assert results.read_bytes() == before


def test_a_worker_killed_mid_run_leaves_every_photo_exactly_once(model_file, cluster, tmp_path):
    inbox, results, summary = tmp_path / "inbox", tmp_path / "results.csv", tmp_path / "summary.json"
    inbox.mkdir()
    names = make_inbox(inbox, 150)
    pids = worker_pids(cluster)
    run = subprocess.Popen(sharded(model_file, inbox, results, cluster, summary, "--shard-size", "25"), env=job_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while data_rows(results) < 10 and run.poll() is None:          # both workers are classifying
        time.sleep(0.005)
    victim, pid = sorted(pids.items())[0]
    os.kill(pid, signal.SIGKILL)
    out, err = run.communicate(timeout=600)
    assert run.returncode == EXIT_OK, err
    table = read_results(results)
    assert sorted(table.file) == sorted(names) and table.file.is_unique and (table.status == "ok").all()
    shards = json.loads(summary.read_text())["shards"]
    lost = [s for s in shards if s["status"] == "lost"]
    assert lost and {s["worker"] for s in lost} == {victim}, shards
    ok = [s for s in shards if s["status"] == "ok"]
    assert sorted(s["shard"] for s in ok) == list(range(6))                # every shard finished once
    assert "150 processed (150 ok, 0 errors)" in out and "0 already done" in out   # the lost worker's rows count
    one = run_job(model_file, inbox, tmp_path / "one.csv", "--batch-size", "5", "--threads", "1")
    assert one.returncode == EXIT_OK, one.stderr
    pd.testing.assert_frame_equal(comparable(results), comparable(tmp_path / "one.csv"))
