"""Returns batch job on the CPU: images per second of the job (kronkers_ml.returns.batch.run_batch: scan, hash,
decode, classify, append and flush a batch at a time) and its overhead against a bare loop over the same model on
the same PNG files with the same batches (decode and predict only), measured side by side in one process with the
repeats interleaved (bare, job, job, bare, ...), after a warm-up of both. The job's own costs (reading and hashing
each file, appending and flushing each batch's rows) are also timed apart from the model, and both loops' CPU time
is recorded: where other processes share the cores the wall-clock ratio is noisy, and the CPU-time overhead is the
figure to read (run with --threads 1 so that CPU time equals idle wall time); the job flushes each batch to disk
while it classifies the next, so the flush adds no time while a batch's model time exceeds it.

    .venv/bin/python benchmarks/returns_batch.py                              # 200 photos, 3 repeats
    .venv/bin/python benchmarks/returns_batch.py --threads 1 --images 100     # on a busy machine
    .venv/bin/python benchmarks/returns_batch.py --images 400 --repeats 5 --architecture efficientnet_b0

The photos are Fashion-MNIST test images of the five return categories written as PNG (as get-returns-data
writes the inbox); the model is an EfficientNet built by kronkers_ml.returns.model at the pipeline's input size,
saved with save_classifier and loaded with load_classifier (untrained: speed does not depend on the weights).
Writes benchmarks/results/returns_batch.json.

With `--compare-threads`, the console script `kronkers-returns-batch` itself is timed instead, as the nightly run
starts it, on the same photos with three thread settings side by side in one run (rounds interleaved, each run into
a fresh results file): torch's default (one thread per core, what the job used before it set threads), one
thread, and the job's own default (no `--threads`: the cores the load average leaves idle). Writes
benchmarks/results/returns_batch_threads.json.

    .venv/bin/python benchmarks/returns_batch.py --compare-threads --images 400 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info, write_result  # noqa: E402

from kronkers_ml.returns.batch import append_durably, format_rows, read_item, run_batch, scan_inbox  # noqa: E402
from kronkers_ml.returns.data import load_fashion_mnist, write_inbox  # noqa: E402
from kronkers_ml.returns.model import build_classifier, ensemble_of, load_classifier, save_classifier  # noqa: E402


def bare_loop(model, inbox: Path, names: list[str], batch_size: int) -> tuple[float, float]:
    "Wall and CPU seconds to decode and classify every file, `batch_size` at a time, with nothing else around it."
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(names), batch_size):
        images = []
        for name in names[start:start + batch_size]:
            image = Image.open(inbox / name)
            image.load()
            images.append(image)
        model.predict(images)
    return time.perf_counter() - t0, time.process_time() - c0


def job_run(model, inbox: Path, results: Path, batch_size: int) -> tuple[float, float]:
    "Wall and CPU seconds of one batch-job run over the whole inbox into a fresh results file."
    results.unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_batch(inbox, results, model, batch_size=batch_size)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert summary["processed"] == summary["files_seen"], summary
    return seconds, cpu


def components(inbox: Path, names: list[str], folder: Path, batch_size: int, repeats: int = 5) -> dict:
    """The job's own costs measured apart from the model (best of `repeats`): reading, hashing and checking a file
    against decoding it bare, and appending one batch's rows with the flush to disk."""
    def best(f):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
        return min(times)
    def bare():
        for name in names:
            image = Image.open(inbox / name); image.load()
    def job():
        for name in names: read_item(inbox, name)
    rows = format_rows([{"file": names[0], "sha256": "0" * 64, "category": "casual_shoes", "confidence": "0.912345",
                         "needs_review": False, "model_version": "0" * 16, "processed_at": "2026-01-01T02:00:00+00:00",
                         "status": "ok", "error": ""}] * batch_size)
    fd = os.open(folder / "append.csv", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        flushes = []
        for _ in range(30):
            t0 = time.perf_counter(); append_durably(fd, rows); flushes.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return {"bare_decode_ms_per_image": best(bare) / len(names) * 1000,
            "job_read_ms_per_image": best(job) / len(names) * 1000,
            "append_flush_ms_per_batch_median": statistics.median(flushes) * 1000,
            "append_flush_ms_per_batch_max": max(flushes) * 1000}


def compare_threads(args) -> dict:
    "Wall seconds of the console script on the same inbox with torch's default threads, 1 thread and the job's default."
    import json
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    torch_default = int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    settings = {"torch_default": ["--threads", str(torch_default)], "one_thread": ["--threads", "1"], "job_default": []}
    script = Path(sys.executable).parent / "kronkers-returns-batch"
    runs = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        images, _ = load_fashion_mnist(args.fashion_mnist, "t10k")
        write_inbox(d / "inbox", images, args.images, seed=0)
        nets = [build_classifier(args.architecture, n_classes=5, pretrained=False, seed=k) for k in range(args.members)]
        save_classifier(ensemble_of(nets), d / "model.pt", image_size=args.image_size, flip_tta=args.flip_tta)
        for r in range(args.repeats):
            names = list(settings) if r % 2 == 0 else list(settings)[::-1]
            for name in names:
                results = d / f"{name}{r}.csv"
                cmd = [str(script), "--input", str(d / "inbox"), "--output", str(results), "--model", str(d / "model.pt"),
                       "--no-progress", "--batch-size", str(args.batch_size), "--summary-json", str(results.with_suffix(".json")),
                       *settings[name]]
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                wall = time.perf_counter() - t0
                summary = json.loads(results.with_suffix(".json").read_text())
                assert summary["processed"] == args.images, summary
                runs[name].append({"wall_seconds": wall, "job_seconds": summary["seconds"], "threads": summary["threads"],
                                   "load_average_1min": os.getloadavg()[0]})
                print(f"round {r + 1}, {name} ({summary['threads']} threads): {wall:.1f} s wall, "
                      f"{summary['seconds']:.1f} s classifying", flush=True)
    result = {"benchmark": "returns_batch_threads", "machine": machine_info(),
              "usable_cpus": len(os.sched_getaffinity(0)), "images": args.images, "batch_size": args.batch_size,
              "architecture": args.architecture, "image_size": args.image_size, "torch_default_threads": torch_default,
              "runs": runs,
              "median_job_seconds": {n: statistics.median(x["job_seconds"] for x in v) for n, v in runs.items()}}
    path = write_result(result, Path(args.out).with_name("returns_batch_threads.json"))
    print(f"median seconds classifying {args.images} photos: " +
          ", ".join(f"{n} {s:.1f}" for n, s in result["median_job_seconds"].items()) + f" -> {path}")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="PNG photos in the inbox (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=10, help="images per model call in both loops (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved pairs of runs (default: %(default)s)")
    p.add_argument("--architecture", default="efficientnet_lite0", choices=["efficientnet_lite0", "efficientnet_b0"],
                   help="the pipeline's default is efficientnet_lite0 (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=96, help="network input in pixels, as env.yaml (default: %(default)s)")
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=False,
                   help="average each photo with its mirror image, env.yaml's returns.flip_tta (default: off)")
    p.add_argument("--members", type=int, default=1,
                   help="networks averaged per photo, env.yaml's returns.members (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST folder")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "returns_batch.json"), help="result JSON")
    p.add_argument("--compare-threads", action="store_true",
                   help="time the console script with torch's default threads, 1 thread and its own default instead")
    args = p.parse_args(argv)
    if args.compare_threads: return compare_threads(args)
    if args.threads: torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        images, _ = load_fashion_mnist(args.fashion_mnist, "t10k")
        write_inbox(d / "inbox", images, args.images, seed=0)
        names = scan_inbox(d / "inbox")
        nets = [build_classifier(args.architecture, n_classes=5, pretrained=False, seed=k) for k in range(args.members)]
        save_classifier(ensemble_of(nets), d / "model.pt",
                        image_size=args.image_size, flip_tta=args.flip_tta)
        model = load_classifier(d / "model.pt")
        # warm-up of both paths (first calls allocate and pick kernels)
        bare_loop(model, d / "inbox", names[: 2 * args.batch_size], args.batch_size)
        job_run(model, d / "inbox", d / "warm.csv", args.batch_size)
        bare, job, bare_cpu, job_cpu = [], [], [], []
        for r in range(args.repeats):
            order = ("bare", "job") if r % 2 == 0 else ("job", "bare")
            for which in order:
                if which == "bare":
                    wall, cpu = bare_loop(model, d / "inbox", names, args.batch_size); bare.append(wall); bare_cpu.append(cpu)
                else:
                    wall, cpu = job_run(model, d / "inbox", d / "results.csv", args.batch_size); job.append(wall); job_cpu.append(cpu)
            print(f"repeat {r + 1}: bare {bare[-1]:.2f} s, job {job[-1]:.2f} s", flush=True)
        parts = components(d / "inbox", names, d, args.batch_size)

    n = len(names)
    bare_med, job_med = statistics.median(bare), statistics.median(job)
    result = {
        "benchmark": "returns_batch", "machine": machine_info(), "torch_threads": torch.get_num_threads(),
        "images": n, "batch_size": args.batch_size, "repeats": args.repeats, "architecture": args.architecture,
        "image_size": args.image_size, "flip_tta": args.flip_tta, "members": args.members, "model_version": model.version,
        "bare_seconds": bare, "job_seconds": job,
        "bare_images_per_s": n / bare_med, "job_images_per_s": n / job_med,
        "overhead": job_med / bare_med - 1,
        "overhead_per_pair": [j / b - 1 for b, j in zip(bare, job)],
        "job_ms_per_image_extra": (job_med - bare_med) / n * 1000,
        "bare_ms_per_image": bare_med / n * 1000,
        "bare_cpu_seconds": bare_cpu, "job_cpu_seconds": job_cpu,
        # CPU time hardly depends on other processes sharing the cores; with one torch thread it is the wall time of
        # an idle machine. The flush to disk is waiting, not CPU: the job overlaps it with the next batch's model
        # time, so it is hidden while a batch's model time exceeds it; `overhead_cpu_plus_flush` is the bound if
        # it were not overlapped.
        "overhead_cpu": statistics.median(job_cpu) / statistics.median(bare_cpu) - 1,
        "overhead_cpu_plus_flush": (statistics.median(job_cpu) - statistics.median(bare_cpu)
                                    + parts["append_flush_ms_per_batch_median"] / 1000 * -(-n // args.batch_size))
                                   / statistics.median(bare_cpu),
        "model_cpu_ms_per_batch": statistics.median(bare_cpu) / -(-n // args.batch_size) * 1000,
        "bare_cpu_ms_per_image": statistics.median(bare_cpu) / n * 1000,
        "components": parts,
        # the job's own cost per image from the parts measured apart, against the bare loop's time per image
        "overhead_from_components": (parts["job_read_ms_per_image"] - parts["bare_decode_ms_per_image"]
                                     + parts["append_flush_ms_per_batch_median"] / args.batch_size) / (bare_med / n * 1000),
    }
    path = write_result(result, args.out)
    print(f"{n} photos, batches of {args.batch_size}, {args.architecture} at {args.image_size}px, "
          f"{result['torch_threads']} threads: job {result['job_images_per_s']:.1f} img/s, bare loop "
          f"{result['bare_images_per_s']:.1f} img/s, overhead {result['overhead']:+.1%} "
          f"(pairs: {', '.join(f'{o:+.1%}' for o in result['overhead_per_pair'])}); CPU time "
          f"{result['overhead_cpu']:+.1%} (bare {result['bare_cpu_ms_per_image']:.1f} CPU ms/img), "
          f"{result['overhead_cpu_plus_flush']:+.1%} if the flush were not overlapped; "
          f"from the parts measured apart "
          f"{result['overhead_from_components']:+.1%} (read+hash {parts['job_read_ms_per_image']:.3f} vs decode "
          f"{parts['bare_decode_ms_per_image']:.3f} ms/img, append+flush {parts['append_flush_ms_per_batch_median']:.1f} "
          f"ms/batch) -> {path}")
    return result


if __name__ == "__main__":
    main()
