"""Dashboards: Voila serves each report page on the tiny build; headless Chromium renders it without an error, with
its key figures and no horizontal scrolling on a laptop-sized window; a screenshot of each page is kept."""
from __future__ import annotations

import http.client
import json
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import VOILA_LOGS, voila  # noqa: F401  (voila: also the benchmarks' and the try-it tests')

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["overview", "service_time", "demand", "monitoring", "returns", "recommendations"]
SHOTS = ROOT / "outputs-test" / "screenshots"        # kept after the run, to look at
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1366, 900                           # a laptop screen


def chrome(profile: Path):
    "Headless Chromium (Debian's, through its chromedriver) with a fresh profile and no network chatter."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed (make system-deps installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(180)
    return driver


DONE_JS = """
const outs = document.querySelectorAll('.jp-OutputArea-output');
const busy = document.querySelector('#loading') || document.querySelector('.voila-spinner-color1');
const widgets = document.body.innerText.includes('Loading widget');
return outs.length > 0 && !busy && !widgets && document.readyState === 'complete';
"""


def render(driver, url: str, timeout_s: float = 300) -> float:
    "Open `url` and wait until Voila's kernel-executed outputs are on the page; the seconds it took."
    from selenium.webdriver.support.ui import WebDriverWait
    t0 = time.perf_counter()
    try:
        driver.get(url)
        WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: d.execute_script(DONE_JS))
    except Exception as e:
        log = next((p for b, p in VOILA_LOGS.items() if url.startswith(b)), None)
        tail = log.read_text()[-4000:] if log and log.exists() else "(no log)"
        raise AssertionError(f"{url.split('?')[0]} did not render in {time.perf_counter() - t0:.0f} s "
                             f"({type(e).__name__}); the end of Voila's log:\n{tail}") from e
    return time.perf_counter() - t0


def wait_for_text(driver, text: str, timeout_s: float = 120) -> bool:
    "Whether `text` is on the page within `timeout_s` seconds."
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda d: text in d.find_element("tag name", "body").text)
        return True
    except TimeoutException:
        return False


def page_problems(driver) -> list[str]:
    "Error and stderr outputs, tracebacks and Voila's execution-error notice on the rendered page."
    from selenium.webdriver.common.by import By
    bad = driver.find_elements(By.CSS_SELECTOR, '[data-mime-type="application/vnd.jupyter.stderr"], '
                                                '[data-mime-type="application/vnd.jupyter.error"]')
    text = driver.find_element(By.TAG_NAME, "body").text
    return [e.text[:500] for e in bad] + [m for m in ("Traceback", "There was an error when executing cell") if m in text]


def screenshot(driver, name: str) -> Path:
    "The whole page at laptop width, as PNG under outputs-test/screenshots/."
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
    driver.set_window_size(WIDTH, min(int(height) + 120, 12000))
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, HEIGHT)
    return path


def big(x: float) -> str:
    "A headline figure as the overview writes it: one decimal below 100, none above."
    return f"{x:,.1f}" if abs(x) < 100 else f"{x:,.0f}"


def key_figures(out: Path) -> dict[str, list[str]]:
    "What each page must show, formatted as the pages write it, read straight from the products."
    st = json.loads((out / "service_time" / "metrics.json").read_text())
    dm = json.loads((out / "demand" / "metrics.json").read_text())
    stops = pd.read_parquet(out / "service_time" / "raw" / "stops.parquet", columns=["route_id"])
    per_route = stops.groupby("route_id").size().mean()
    model_min, rule_min = st["model"]["mae_s"] / 60, st["baselines"]["business_rule_7min"]["mae_s"] / 60
    minutes = (rule_min - model_min) * per_route
    nok = dm["baselines"]["seasonal_naive"]["mae"] - dm["model"]["mae"]
    champion = json.loads((out / "service_time" / "registration.json").read_text())["champion_version_after"]
    quality = {f: json.loads((out / "monitoring" / "quality" / f"{f}.json").read_text()) for f in ("service_time", "demand", "returns")}
    rt = json.loads((out / "returns" / "metrics.json").read_text())
    batch = json.loads((out / "returns" / "batch" / "summary.json").read_text())
    hours = rt["review"]["auto_share"] * 1000 * 2.0 / 60          # the pages' default of 2 minutes per item
    pct = lambda x: f"{x * 100:,.1f}%"
    figures = {
        "overview": [big(minutes), big(nok), f"version {champion}",
                     "driver minutes per route per day"],
        "service_time": [f"{st['data']['rows_test']:,} deliveries", f"{model_min:,.2f} min", f"{rule_min:,.2f} min",
                         f"{minutes:,.1f} driver minutes per route per day",
                         f"Model card of the champion (version {champion})"],      # collapsed: its summary line
        "demand": [f"{dm['model']['mae']:,.0f} NOK", f"{dm['baselines']['seasonal_naive']['mae']:,.0f} NOK",
                   f"{dm['model']['coverage_80'] * 100:,.0f}%"],
        "monitoring": [f"{q['n_constraints'] - q['n_failed']:,} of {q['n_constraints']:,} rules pass" for q in quality.values()],
        "returns": [f"{hours:,.1f} hours of manual inspection saved per 1,000 returns", "2.0 minutes",
                    pct(rt["model"]["accuracy"]), pct(rt["baselines"]["linear"]["accuracy"]),
                    pct(rt["baselines"]["majority"]["accuracy"]), f"{rt['test_images']:,} test photos",
                    f"{batch['photos']:,} images", f"{batch['needs_review']:,} needing review",
                    "Precision", "Recall", "The last nightly batch"],
    }
    figures["overview"] += [big(hours), "hours of manual inspection saved per 1,000 returns"]
    rc = json.loads((out / "recommendations" / "metrics.json").read_text())
    camp = json.loads((out / "recommendations" / "campaign.json").read_text())
    figures["recommendations"] = [f"{rc['model']['recall_at_10'] * 100:,.1f}% of what shoppers bought was in their top 10",
                                  f"{rc['data']['customers_test']:,} customers who shopped", "bought from the best sellers",
                                  f"{camp['campaign']['contacted']:,} customers over", camp["stock"]["verdict"]]
    figures["overview"] += [big(rc["model"]["recall_at_10"] * 100), "% of what shoppers bought was in our top 10"]
    return figures


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    with voila(built) as (base, token):
        driver = chrome(tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield base, token, driver
        finally:
            driver.quit()


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_its_key_figures(served, built, page):
    base, token, driver = served
    seconds = render(driver, f"{base}/voila/render/{page}.ipynb?token={token}")
    assert page_problems(driver) == []
    text = driver.find_element("tag name", "body").text
    missing = [f for f in key_figures(built)[page] if f not in text]
    assert not missing, f"{page}: not on the page: {missing}\n{text[:3000]}"
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page}: {overflow} px wider than a {WIDTH}-px window (horizontal scrolling)"
    if page in ("service_time", "demand", "returns"):   # the controls of the live page are drawn
        assert driver.find_elements("css selector", ".widget-dropdown, .widget-slider, .jupyter-widgets"), page
    if page == "returns":   # the threshold slider reads out the review queue of the live page
        assert "review queue" in text and "per 1,000 returns" in text, text[-2000:]
    shot = screenshot(driver, page)
    assert shot.stat().st_size > 10_000, shot
    print(f"{page}: rendered in {seconds:.1f} s; screenshot {shot}")


def test_a_moved_control_redraws_its_output(served):
    "On the live demand page, one step left on the days-ahead slider redraws the total for one day fewer."
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    base, token, driver = served
    render(driver, f"{base}/voila/render/demand.ipynb?token={token}")
    before = re.search(r"Forecast revenue over the next (\d+) days", driver.find_element(By.TAG_NAME, "body").text)
    assert before, "the slider's output is not on the page"
    driver.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle").send_keys(Keys.ARROW_LEFT)
    want = f"Forecast revenue over the next {int(before.group(1)) - 1} days"
    WebDriverWait(driver, 60, poll_frequency=0.1).until(lambda d: want in d.find_element(By.TAG_NAME, "body").text)
    assert page_problems(driver) == []


def test_pages_need_the_token(served):
    base, token, _ = served
    host, port = base.removeprefix("http://").split(":")
    def get(path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        conn.request("GET", path)
        r = conn.getresponse()
        status, location = r.status, r.getheader("Location") or ""
        conn.close()
        return status, location
    status, location = get("/voila/render/overview.ipynb")
    assert status in (401, 403) or (status == 302 and "/login" in location), (status, location)
    status, _ = get(f"/voila/render/overview.ipynb?token=wrong-{token}")
    assert status in (401, 403) or status == 302, status


def test_page_without_outputs_says_how_to_build(tmp_path):
    empty = tmp_path / "nothing-built"
    empty.mkdir()
    with voila(empty) as (base, token):
        driver = chrome(tmp_path / "profile")
        try:
            for page in ("overview", "returns"):
                render(driver, f"{base}/voila/render/{page}.ipynb?token={token}")
                assert page_problems(driver) == []
                # A page served from a preheated kernel that is still running its cells gets their outputs as they
                # come: wait for the sentence rather than read the page at its first output.
                assert wait_for_text(driver, "make build"), (page, driver.find_element("tag name", "body").text)
                screenshot(driver, f"{page}-no-outputs")
            assert wait_for_text(driver, "No returns results yet"), driver.find_element("tag name", "body").text
        finally:
            driver.quit()


def test_static_archive_of_every_page(built):
    for page in PAGES:
        html = (built / "reports" / f"{page}.html").read_text()
        code_cells = re.findall(r'class="jp-Cell jp-CodeCell[^"]*"', html)
        assert code_cells and all("jp-mod-noInput" in c for c in code_cells), f"{page}.html shows code"
        assert "from kronkers_ml" not in html, f"{page}.html shows code"
        assert "Traceback" not in html, page
    assert 'href="service_time.html"' in (built / "reports" / "overview.html").read_text()
