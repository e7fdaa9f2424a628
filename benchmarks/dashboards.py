"""Time until each dashboard page has rendered in a browser, with the Voila server already warm.

Starts Voila on a free local port over reports/ with KRONKERS_OUTPUTS=--out, opens every page once in headless
Chromium to warm the server (imports cached, first kernel started), then opens each page --repeats times and
records the seconds from the request until Voila's kernel-executed outputs are on the page (each load runs the
page's notebook in a kernel, as a reader's visit does). By default Voila preheats kernels as `make dashboards`
runs it (--preheat_kernel=True, --pool_size): a kernel per page has already run the page when the request comes,
and the pool refills about a second after each visit; --no-preheat measures a new kernel per visit. The timed
loads go round the pages (page 1, 2, ..., page 1, 2, ...) as readers moving between pages would. Uses the same
server, browser and wait as tests/pages/test_dashboards.py. Needs a build: `make build` (outputs/) or the tiny run (`--out outputs-test`).
Writes benchmarks/results/dashboards.json and prints it.

With --visits N it measures memory instead: the resident memory (RSS) of Voila and all its kernels, summed, after
N page visits in headless Chromium (round the pages), twice: with Voila as it ran before kernels were culled
(preheated pool, no culling) and as deploy/dashboards runs it now (idle kernels culled, --cull-idle-s, and at most
--max-kernels held); also the most held after any visit, and after the idle time has passed. Writes benchmarks/results/dashboards_memory.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, machine_info, write_result  # noqa: E402
from test_dashboards import PAGES, chrome, page_problems, render, voila  # noqa: E402
from test_state_dashboards import dashboards  # noqa: E402


def held(port: int) -> dict:
    "The Voila listening on `port`: its kernels and the RSS of it and them, summed (MB)."
    import psutil
    server = next(p for p in psutil.process_iter(["cmdline"]) if f"--port={port}" in (p.info["cmdline"] or []))
    rss, kernels = server.memory_info().rss, 0
    for k in server.children(recursive=True):
        try:                                                  # a kernel being shut down may be gone or a zombie
            if "ipykernel" in " ".join(k.cmdline()) and k.status() != psutil.STATUS_ZOMBIE:
                rss, kernels = rss + k.memory_info().rss, kernels + 1
        except psutil.Error:
            continue
    return {"kernels": kernels, "rss_mb": round(rss / 2**20, 1)}


def visits(driver, base: str, token: str, port: int, n: int, pages: list[str]) -> dict:
    "Memory after warm-up and after `n` visits round the pages, and the most held after any visit."
    url = lambda page: f"{base}/voila/render/{page}.ipynb?token={token}"
    render(driver, url(pages[0]))
    warm = held(port)
    peak = dict(warm)
    for i in range(n):
        render(driver, url(pages[i % len(pages)]))
        now = held(port)
        peak = {k: max(peak[k], now[k]) for k in peak}
    driver.get("about:blank")                                # the last page closed too
    return {"after_warmup": warm, f"after_{n}_visits": held(port), "peak_during_visits": peak}


def memory(args) -> int:
    out, pages, n = Path(args.out).resolve(), args.pages, args.visits
    result = {"benchmark": "dashboards_memory", "outputs": str(out), "visits": n, "pages": pages}
    with tempfile.TemporaryDirectory() as tmp:
        driver = chrome(Path(tmp) / "profile")
        try:
            with voila(out, preheat=True, pool_size=1) as (base, token):
                port = int(base.rsplit(":", 1)[1])
                result["before_no_culling"] = visits(driver, base, token, port, n, pages)
                time.sleep(args.cull_idle_s + 3 * args.cull_interval_s)
                result["before_no_culling"]["after_idle_wait"] = held(port)
            with dashboards(Path(tmp), outputs=out, cull_idle_s=str(args.cull_idle_s), max_kernels=str(args.max_kernels),
                            cull_interval_s=str(args.cull_interval_s)) as (_, base, token):
                port = int(base.rsplit(":", 1)[1])
                result["after_culling"] = visits(driver, base, token, port, n, pages)
                time.sleep(args.cull_idle_s + 3 * args.cull_interval_s)
                result["after_culling"]["after_idle_wait"] = held(port)
        finally:
            driver.quit()
    result.update(idle_wait_s=args.cull_idle_s + 3 * args.cull_interval_s, cull_idle_s=args.cull_idle_s,
                  cull_interval_s=args.cull_interval_s, max_kernels=args.max_kernels, machine=machine_info())
    path = write_result(result, args.result.replace("dashboards.json", "dashboards_memory.json"))
    print(path.read_text())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "outputs"), help="outputs folder the pages read (default: outputs/)")
    p.add_argument("--repeats", type=int, default=3, help="timed loads per page after the warm-up (default 3)")
    p.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "dashboards.json"), help="JSON result path")
    p.add_argument("--no-preheat", action="store_true", help="a new kernel per visit (Voila's default), no pool")
    p.add_argument("--pool-size", type=int, default=1, help="preheated kernels per page (default 1)")
    p.add_argument("--pages", nargs="+", default=PAGES, help=f"pages to time (default: {' '.join(PAGES)})")
    p.add_argument("--visits", type=int, default=0, help="measure memory after this many page visits instead of time")
    p.add_argument("--cull-idle-s", type=int, default=60, help="with --visits: idle seconds before a kernel is culled (default 60)")
    p.add_argument("--cull-interval-s", type=int, default=5, help="with --visits: seconds between culling checks (default 5)")
    p.add_argument("--max-kernels", type=int, default=12, help="with --visits: deploy/dashboards' bound on kernels held (default 12, as deployed)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if not (out / "service_time" / "metrics.json").exists():
        sys.exit(f"{out}: no build there; run `make build` (or the tiny run and --out outputs-test) first")
    if args.visits:
        return memory(args)
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
