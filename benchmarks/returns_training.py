"""Returns classifier speed: training and prediction throughput of EfficientNet-B0 and EfficientNet-Lite0 on the
CPU (or CUDA when available), per input size, on Fashion-MNIST images of the five return categories, with the
activations laid out channels-last (the default) and in PyTorch's default layout, side by side.

    .venv/bin/python benchmarks/returns_training.py                       # 48 and 64 px, both architectures
    .venv/bin/python benchmarks/returns_training.py --sizes 32 48 96 --threads 2 --steps 10

Throughput is measured after one warm-up step. Figures depend heavily on what else runs on the machine: report the
load average recorded beside them. Writes benchmarks/results/returns_training.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info, write_result  # noqa: E402

from kronkers_ml.returns.data import load_fashion_mnist, sample_per_class  # noqa: E402
from kronkers_ml.returns.model import (CATEGORIES, ReturnsClassifier, build_classifier, pick_device,  # noqa: E402
                                       set_threads, train_classifier)


def measure(architecture: str, size: int, images: np.ndarray, labels: np.ndarray, batch_size: int, steps: int,
            threads: int | None, channels_last: bool = True) -> dict:
    "Training images/s (after a warm-up step) and prediction images/s of one architecture at one input size."
    model = build_classifier(architecture, pretrained=True, seed=0)
    train_classifier(model, images[:batch_size], labels[:batch_size], size, epochs=1, batch_size=batch_size,
                     threads=threads, progress=False, channels_last=channels_last)
    n = batch_size * steps
    history = train_classifier(model, images[:n], labels[:n], size, epochs=1, batch_size=batch_size,
                               threads=threads, progress=False, channels_last=channels_last)
    classifier = ReturnsClassifier(model, CATEGORIES, size, channels_last=channels_last)
    t0 = time.perf_counter()
    classifier.predict_proba(images[:n])
    predict_s = time.perf_counter() - t0
    return {"architecture": architecture, "image_size": size, "channels_last": channels_last,
            "batch_size": batch_size, "train_images": n,
            "train_images_per_s": n / history["train_seconds"], "predict_images_per_s": n / predict_s,
            "device": history["device"], "threads": history["threads"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion-mnist-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 64], help="input sizes in pixels")
    parser.add_argument("--architectures", nargs="+", default=["efficientnet_lite0", "efficientnet_b0"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per measurement")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "returns_training.json"))
    args = parser.parse_args(argv)
    threads = args.threads or None
    images, labels = load_fashion_mnist(args.fashion_mnist_dir, "train")
    idx = np.random.default_rng(0).permutation(sample_per_class(labels, 500, 0))
    images, labels = images[idx], labels[idx]
    rows, speedups = [], []
    for size in args.sizes:
        for architecture in args.architectures:
            pair = {cl: measure(architecture, size, images, labels, args.batch_size, args.steps, threads, cl)
                    for cl in (True, False)}   # one after the other on the same machine state
            rows += [pair[True], pair[False]]
            speedups.append({"architecture": architecture, "image_size": size,
                             "train_speedup": pair[True]["train_images_per_s"] / pair[False]["train_images_per_s"],
                             "predict_speedup": pair[True]["predict_images_per_s"] / pair[False]["predict_images_per_s"]})
            print(pair[True], pair[False], speedups[-1], sep="\n", flush=True)
    result = {"benchmark": "returns_training", "machine": machine_info(), "device": pick_device().type,
              "threads": set_threads(threads), "load_average": os.getloadavg(), "results": rows,
              "channels_last_speedup": speedups}
    print("wrote", write_result(result, args.out))


if __name__ == "__main__":
    main()
