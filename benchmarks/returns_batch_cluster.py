"""Returns batch job in shards on a Dask cluster: photos per second of the job (kronkers_ml.returns.batch.run_batch)
in one process, and with its shards on 1 and on 2 Dask workers (`--scheduler`), side by side in one run on the same
photos and the same model. A scheduler with 1 worker and one with 2 workers (one process and one thread each,
`local_cluster` on 127.0.0.1) are started first and kept for the whole run; then the configurations run in rounds,
in a different order each round, each into a fresh results file. The run that starts the job only hands out shards
(as `kronkers-returns-batch --scheduler` does); the first round of a cluster includes each worker loading the model
(once per worker process), later rounds reuse it: the figures are the first round and the median of the later
rounds. The load average is recorded before and after each run.

    .venv/bin/python benchmarks/returns_batch_cluster.py                          # 400 photos, 4 rounds
    .venv/bin/python benchmarks/returns_batch_cluster.py --images 200 --rounds 2 --shard-size 25

The photos are Fashion-MNIST test images written as PNG (as get-returns-data writes the inbox); the model is the
pipeline's EfficientNet-Lite0 at 96 px, untrained (speed does not depend on the weights), saved with
save_classifier. Every run writes one row per photo (checked). Writes benchmarks/results/returns_batch_cluster.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, machine_info, write_result  # noqa: E402
from kronkers_ml.platform.cluster import local_cluster  # noqa: E402
from kronkers_ml.returns.batch import ModelSource, load_model, read_results, run_batch, set_threads  # noqa: E402
from kronkers_ml.returns.data import load_fashion_mnist, write_inbox  # noqa: E402
from kronkers_ml.returns.model import build_classifier, save_classifier  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400, help="PNG photos in the inbox (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the three configurations (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=10, help="photos per model call (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=50, help="photos per worker task (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=96, help="network input in pixels, as env.yaml (default: %(default)s)")
    p.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST folder")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "returns_batch_cluster.json")
    args = p.parse_args(argv)
    set_threads(1)                                   # one torch thread, as each worker has (OMP_NUM_THREADS=1)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"PYTHONPATH": str(ROOT)}
    runs = {"one process": [], "1 worker": [], "2 workers": []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        d = Path(tmp)
        images, _ = load_fashion_mnist(args.fashion_mnist, "t10k")
        write_inbox(d / "inbox", images, args.images, seed=0)
        save_classifier(build_classifier("efficientnet_lite0", n_classes=5, pretrained=False), d / "model.pt",
                        image_size=args.image_size)
        model, source = load_model(d / "model.pt"), ModelSource(path=str(d / "model.pt"))
        schedulers = {"one process": None,
                      "1 worker": stack.enter_context(local_cluster(1, env=env, cwd=ROOT, logs=d / "dask1")),
                      "2 workers": stack.enter_context(local_cluster(2, env=env, cwd=ROOT, logs=d / "dask2"))}
        names = list(runs)
        for r in range(args.rounds):
            order = names[r % 3:] + names[:r % 3]
            for name in order:
                results = d / f"results-{r}-{name.replace(' ', '-')}.csv"
                load_before = os.getloadavg()[0]
                t0 = time.perf_counter()
                s = run_batch(d / "inbox", results, model, args.batch_size, scheduler=schedulers[name], source=source,
                              shard_size=args.shard_size, threads=1)
                seconds = time.perf_counter() - t0
                assert s["processed"] == args.images and len(read_results(results)) == args.images, s
                pids = sorted({sh["pid"] for sh in s.get("shards", []) if sh["status"] == "ok"})
                runs[name].append({"round": r + 1, "seconds": seconds, "photos_per_s": args.images / seconds,
                                   "worker_pids": pids, "load_average_before": load_before,
                                   "load_average_after": os.getloadavg()[0]})
                print(f"round {r + 1}, {name}: {seconds:.1f} s, {args.images / seconds:.1f} photos/s "
                      f"(load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    # the first round of a cluster includes each worker importing torch and loading the model: reported apart
    median = {n: statistics.median(x["photos_per_s"] for x in v[1:] or v) for n, v in runs.items()}
    first = {n: v[0]["photos_per_s"] for n, v in runs.items()}
    result = {"benchmark": "returns_batch_cluster", "machine": machine_info(), "usable_cpus": len(os.sched_getaffinity(0)),
              "images": args.images, "batch_size": args.batch_size, "shard_size": args.shard_size,
              "image_size": args.image_size, "architecture": "efficientnet_lite0", "torch_threads": 1,
              "runs": runs, "first_round_photos_per_s": first, "median_photos_per_s_after_first_round": median,
              "ratio_to_one_process": {n: v / median["one process"] for n, v in median.items()},
              "two_workers_over_one": median["2 workers"] / median["1 worker"]}
    path = write_result(result, args.output)
    print("first round photos/s: " + ", ".join(f"{n} {v:.1f}" for n, v in first.items()))
    print("median photos/s of the later rounds: " + ", ".join(f"{n} {v:.1f}" for n, v in median.items())
          + f"; 2 workers / 1 worker = {result['two_workers_over_one']:.2f} -> {path}")
    return result


if __name__ == "__main__":
    main()
