"""The data store on a large input: storing a file of `--mb` MB (default 500, the largest input the store is sized
for) into a new store, storing it again (deduplicated: hashed, nothing copied), one changed file beside it, and
restoring it with every digest checked; wall seconds, MB/s and the process's peak memory (it streams by chunks of
1 MiB, so the peak must not grow with the file). The file is random bytes written to a temporary folder.
Writes benchmarks/results/data_store.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, write_result  # noqa: E402

from kronkers_ml.platform.data import restore_version, store_input  # noqa: E402


def peak_mb() -> float:
    "The process's peak resident memory so far, MB."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, mb: float) -> dict:
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 1), "peak_rss_mb": round(peak_mb(), 1), "result": result}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=500, help="size of the input file, MB (default: %(default)s)")
    ap.add_argument("--dir", default=None, help="folder for the temporary files (default: the system's)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        src = tmp / "input"; src.mkdir()
        with open(src / "log.bin", "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        mb = args.mb * (1 << 20) / 1e6
        before = round(peak_mb(), 1)
        store = str(tmp / "store")
        first = timed(lambda: store_input(src, store, progress=False), mb)
        again = timed(lambda: store_input(src, store, progress=False), mb)
        (src / "note.txt").write_text("a small file added beside the log\n")
        added = timed(lambda: store_input(src, store, progress=False), mb)
        restored = timed(lambda: restore_version(store, first["result"]["version"], tmp / "back", progress=False), mb)
        same = (tmp / "back" / "log.bin").stat().st_size == (src / "log.bin").stat().st_size
        store_bytes = sum(p.stat().st_size for p in (tmp / "store").rglob("*") if p.is_file())
    result = {"benchmark": "data_store", "input_mb": round(mb, 1), "peak_rss_mb_before": before,
              "store_new": {k: v for k, v in first.items() if k != "result"},
              "store_again_deduplicated": {**{k: v for k, v in again.items() if k != "result"},
                                           "new_bytes": again["result"]["new_bytes"], "same_version": again["result"]["version"] == first["result"]["version"]},
              "store_with_one_small_file_added": {**{k: v for k, v in added.items() if k != "result"}, "new_bytes": added["result"]["new_bytes"]},
              "restore_checked": {k: v for k, v in restored.items() if k != "result"}, "restored_size_equal": same,
              "store_mb_on_disk": round(store_bytes / 1e6, 1), **machine_info()}
    write_result(result, ROOT / "benchmarks" / "results" / "data_store.json")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
