"""Time until each dashboard page has rendered in a browser, with the Voila server already warm.

Starts Voila on a free local port over reports/ with KRONKERS_OUTPUTS=--out, opens every page once in headless
Chromium to warm the server (imports cached, first kernel started), then opens each page --repeats times and
records the seconds from the request until Voila's kernel-executed outputs are on the page (each load runs the
page's notebook in a kernel, as a reader's visit does). By default Voila preheats kernels as `make dashboards`
runs it (--preheat_kernel=True, --pool_size): a kernel per page has already run the page when the request comes,
and the pool refills about a second after each visit; --no-preheat measures a new kernel per visit. The timed
loads go round the pages (page 1, 2, ..., page 1, 2, ...) as readers moving between pages would. Uses the same
server, browser and wait as tests/test_dashboards.py. Needs a build: `make build` (outputs/) or the tiny run (`--out outputs-test`).
Writes benchmarks/results/dashboards.json and prints it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, machine_info, write_result  # noqa: E402
from test_dashboards import PAGES, chrome, page_problems, render, voila  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "outputs"), help="outputs folder the pages read (default: outputs/)")
    p.add_argument("--repeats", type=int, default=3, help="timed loads per page after the warm-up (default 3)")
    p.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "dashboards.json"), help="JSON result path")
    p.add_argument("--no-preheat", action="store_true", help="a new kernel per visit (Voila's default), no pool")
    p.add_argument("--pool-size", type=int, default=1, help="preheated kernels per page (default 1)")
    p.add_argument("--pages", nargs="+", default=PAGES, help=f"pages to time (default: {' '.join(PAGES)})")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if not (out / "service_time" / "metrics.json").exists():
        sys.exit(f"{out}: no build there; run `make build` (or the tiny run and --out outputs-test) first")
    pages, preheat = args.pages, not args.no_preheat
    with tempfile.TemporaryDirectory() as tmp, voila(out, preheat=preheat, pool_size=args.pool_size) as (base, token):
        driver = chrome(Path(tmp) / "profile")
        try:
            url = lambda page: f"{base}/voila/render/{page}.ipynb?token={token}"
            warm = {page: round(render(driver, url(page)), 3) for page in pages}
            times = {page: [] for page in pages}
            for _ in range(args.repeats):
                for page in pages:
                    times[page].append(round(render(driver, url(page)), 3))
            problems = {page: page_problems(driver) for page in pages[-1:]}
        finally:
            driver.quit()
    result = {"benchmark": "dashboards", "outputs": str(out), "repeats": args.repeats, "preheat": preheat,
              "pool_size": args.pool_size if preheat else None,
              "first_load_s": warm,
              "render_s": {page: {"median": statistics.median(t), "min": min(t), "max": max(t), "all": t}
                           for page, t in times.items()},
              "errors_on_last_page": problems, "machine": machine_info()}
    path = write_result(result, args.result)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
