"""Try-it pages: a reader's own predictions through the real model service, in headless Chromium on a real Voila.

One model service (the tiny build's champions, keys of three roles) and one Voila (the try-it pages preheated) for
the module. On each page the reader uploads a photo or a CSV, or picks a horizon, and the answer read off the page is
the service's own; a key of a role that may not use the model, no key and a broken file each show their sentence,
never a traceback; each call is a line in the service's audit log; a screenshot of each page is kept."""
from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import BIN, ROOT, free_port, running_service
from test_dashboards import VOILA_LOGS, chrome, page_problems, render, screenshot, wait_for_text
from kronkers_ml.pages.dashboards import fmt
from kronkers_ml.platform.access import create_key, load_roles, read_audit
from kronkers_ml.platform.registry import champion_version, history, set_champion
from kronkers_ml.returns.family import returns_heldout

ROLES = ROOT / "config" / "roles.yaml"
TRY_PAGES = ["try_returns", "try_service_time", "try_demand"]


@pytest.fixture(scope="module")
def service(built, tmp_path_factory):
    """`kronkers serve` on a copy of the build's registry, with keys for operations, procurement and marketing. The
    tiny build's 3-epoch classifier is promoted only when it beats the baselines; when it did not, its version is
    made champion here (in the copy) so that the returns page has a model to ask."""
    home = tmp_path_factory.mktemp("tryit-service")
    (home / "mlflow").mkdir()
    shutil.copy2(built / "mlflow" / "mlflow.db", home / "mlflow" / "mlflow.db")
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    if champion_version(uri, "returns") is None:
        set_champion(uri, "returns", str(history(uri, "returns").iloc[0].version), "test", "the try-it page needs a served classifier")
    roles = load_roles(ROLES)
    keys = {r: create_key(home / "service" / "keys.json", r, roles, f"test {r}")[1] for r in ("operations", "procurement", "marketing")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    args = ["--out", str(home), "--roles", str(ROLES), "--state-dir", str(home / "service")]
    with running_service(args, home / "service.log", env, timeout_s=240) as client:
        yield {"client": client, "keys": keys, "audit": home / "service" / "audit.jsonl", "url": str(client.base_url).rstrip("/")}


@contextmanager
def voila_tryit(out: Path, service_url: str, timeout_s: float = 120):
    "Voila on reports/ as `make dashboards` runs it, the try-it pages preheated (one kernel each), the pages asking `service_url`."
    port, token = free_port(), "test-" + os.urandom(8).hex()
    env = {**os.environ, "KRONKERS_OUTPUTS": str(out), "KRONKERS_SERVICE_URL": service_url, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env.pop("MPLBACKEND", None)
    log_path = Path(tempfile.mkdtemp(prefix="voila-")) / "voila.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(BIN / "voila"), "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}", f"--token={token}",
                             "--show_tracebacks=True", "--preheat_kernel=True", "--pool_size=1",
                             "--Voila.tornado_settings={'websocket_max_message_size': 268435456}",   # as deploy/dashboards
                             "--VoilaKernelManager.preheat_denylist=^(?!try_)",      # the other pages: a kernel per visit
                             str(ROOT / "reports")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    VOILA_LOGS[base] = log_path
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{base}/voila/static/voila.js", timeout=2); break
            except urllib.error.HTTPError: break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"Voila did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.3)
        yield base, token
    finally:
        proc.terminate()
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(built, service, tmp_path_factory):
    with voila_tryit(built, service["url"]) as (base, token):
        driver = chrome(tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield {"base": base, "token": token, "driver": driver, "files": tmp_path_factory.mktemp("uploads")}
        finally:
            driver.quit()


# --- what the reader does on a page ---------------------------------------------------------------------------------

def open_page(browser, page: str):
    driver = browser["driver"]
    render(driver, f"{browser['base']}/voila/render/{page}.ipynb?token={browser['token']}")
    assert wait_for_text(driver, "API key"), driver.find_element("tag name", "body").text[:2000]
    assert page_problems(driver) == []
    return driver


def body(driver) -> str:
    return driver.find_element("tag name", "body").text


def act(driver, key: str | None = None, files: list[Path] | None = None, button: str = "", expect: str = "",
        timeout_s: float = 120) -> str:
    """Type `key` (None: leave the field as it is), choose `files` in the upload, press `button`; wait until `expect` is
    in the result (the form's last output, redrawn by this click) and return the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    if key is not None:          # the page names the key's id once the kernel has it (a click before would not use it)
        field = driver.find_element(By.CSS_SELECTOR, "input[type=password]")
        field.clear(); field.send_keys(key + Keys.RETURN)
        assert wait_for_text(driver, f"key {'_'.join(key.split('_')[:2])} entered", 60), body(driver)[-2000:]
    if files:
        # ipywidgets 8's upload button keeps its file input out of the page and clicks it to open the file dialog;
        # the click is caught here and the input put on the page, where the driver can choose the files
        driver.execute_script(CATCH_FILE_DIALOG)
        driver.find_element(By.CSS_SELECTOR, ".widget-upload").click()
        chooser = WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file][data-chosen-here]"))
        driver.execute_script("arguments[0].value = '';", chooser)
        chooser.send_keys("\n".join(str(f) for f in files))
        names = ", ".join(f.name for f in files)           # the page lists the files once the kernel has them
        assert wait_for_text(driver, f"{len(files)} file{'s' if len(files) != 1 else ''} chosen", 60) and wait_for_text(driver, names, 10), body(driver)[-2000:]
    outputs = driver.find_elements(By.CSS_SELECTOR, ".jupyter-widgets-output-area, .widget-output")
    before = outputs[-1].text if outputs else ""
    go = driver.find_element(By.XPATH, f"//button[contains(., '{button}')]")
    go.click()
    found = wait_for_text(driver, expect, timeout_s)
    text = body(driver)
    assert found, f"not on the page after '{button}': {expect!r}\n(before: {before[:300]!r})\n{text[-3000:]}"
    assert "Traceback" not in text and page_problems(driver) == [], text[-3000:]
    return text


CATCH_FILE_DIALOG = """
if (!window.__fileDialogCaught) {
  window.__fileDialogCaught = true;
  const click = HTMLInputElement.prototype.click;
  HTMLInputElement.prototype.click = function () {
    if (this.type !== 'file') return click.call(this);
    this.setAttribute('data-chosen-here', '1');
    if (!this.isConnected) document.body.appendChild(this);
  };
}
"""


def csv_download(driver, filename: str) -> pd.DataFrame:
    "The CSV the page's download link `filename` holds (the bytes are in the link)."
    link = driver.find_element("css selector", f'a[download="{filename}"]')
    head, payload = link.get_attribute("href").split(",", 1)
    assert head == "data:text/csv;base64", head
    return pd.read_csv(io.BytesIO(base64.b64decode(payload)), dtype={"stop_id": str, "route_id": str})


def audit_lines(service, endpoint: str) -> list[tuple[str, int]]:
    audit = read_audit(service["audit"])
    return [(r.role, int(r.status)) for r in audit[audit.endpoint == endpoint].itertuples()]


def held_photo(built: Path, i: int, folder: Path) -> Path:
    "Held-out test photo `i` of the build as a PNG file."
    from PIL import Image
    image = returns_heldout(built / "returns" / "test.npz").images[i]
    path = folder / f"return_{i:03d}.png"
    Image.fromarray(image).save(path)
    return path


# --- the pages ------------------------------------------------------------------------------------------------------

def test_returns_page_sorts_uploaded_photos_through_the_service(browser, built, service):
    from PIL import Image
    driver, files, keys, c = browser["driver"], browser["files"], service["keys"], service["client"]
    small = held_photo(built, 0, files)
    big = files / "phone_photo.jpg"                                     # a photo straight from a phone: 4000 x 3000
    Image.open(held_photo(built, 1, files)).convert("RGB").resize((4000, 3000)).save(big, quality=90)
    notes = files / "notes.txt"; notes.write_text("not a photo")
    driver = open_page(browser, "try_returns")
    act(driver, None, [small], "Sort the photos", "Enter your API key first")
    act(driver, keys["procurement"], None, "Sort the photos", "role 'procurement' may not use the returns model")
    text = act(driver, keys["operations"], [small, big], "Sort the photos", "2 photos")
    # the service's own answer for the same small photo, and the page's CSV
    direct = c.post("/v1/models/returns/classify", headers={"X-API-Key": keys["operations"]},
                    files=[("files", (small.name, small.read_bytes(), "image/png"))]).json()["results"][0]
    table = csv_download(driver, "returns_categories.csv")
    assert table.file.tolist() == [small.name, big.name] and table.category.iloc[0] == direct["category"], (table, direct)
    assert table.confidence.iloc[0] == pytest.approx(direct["confidence"], abs=1e-4)
    assert table.needs_person.tolist() == (table.confidence < direct_threshold(c, keys)).tolist()
    cats = set(c.get("/v1/models/returns", headers={"X-API-Key": keys["operations"]}).json()["serves"]["categories"])
    assert set(table.category) <= cats
    assert f"{fmt(direct['confidence'] * 100, 1)}%" in text and direct["category"].replace("_", " ") in text
    assert len(driver.find_elements("css selector", "table.kronkers-tryit img[src^='data:image/jpeg']")) == 2   # thumbnails
    screenshot(driver, "try_returns")
    act(driver, None, [small, notes], "Sort the photos", "notes.txt: not a JPEG or PNG photo.")
    # the page's calls are audited as the reader's (no call without a key or with a file refused on the page)
    assert audit_lines(service, "POST /v1/models/returns/classify") == [("procurement", 403), ("operations", 200), ("operations", 200)]


def direct_threshold(c, keys) -> float:
    return float(c.get("/v1/models/returns", headers={"X-API-Key": keys["operations"]}).json()["serves"]["review_threshold"] or 0.9)


def test_service_time_page_predicts_an_uploaded_route(browser, service):
    driver, files, keys, c = browser["driver"], browser["files"], service["keys"], service["client"]
    driver = open_page(browser, "try_service_time")
    example = csv_download(driver, "example_stops.csv")                # the page's own example: one real route
    path = files / "my_route.csv"; example.to_csv(path, index=False)
    act(driver, keys["marketing"], [path], "Predict the minutes", "role 'marketing' may not use the service-time model")
    text = act(driver, keys["operations"], None, "Predict the minutes", "minutes at the doors by the model")
    direct = pd.read_csv(io.StringIO(c.post("/v1/models/service-time/predict.csv", content=path.read_bytes(),
                                            headers={"X-API-Key": keys["operations"], "Content-Type": "text/csv"}).text))
    total, n = direct.service_time_s.sum() / 60, len(direct)
    want = f"Route {example.route_id.iloc[0]}: {n:,} stops, {fmt(total)} minutes at the doors by the model against {fmt(7 * n)} by the 7-minute rule"
    assert want in text, text[-2500:]
    got = csv_download(driver, "service_time_predictions.csv")
    assert got.stop_id.tolist() == example.stop_id.astype(str).tolist()
    np.testing.assert_allclose(got.predicted_minutes, (direct.service_time_s / 60).round(2), atol=0.006)
    screenshot(driver, "try_service_time")
    wrong = files / "wrong_columns.csv"; wrong.write_text("stop,minutes\n1,7\n")
    act(driver, None, [wrong], "Predict the minutes", "wrong_columns.csv: 33 column(s) missing: hour, weekday")
    bad = files / "bad_zone.csv"; example.assign(zone=["moon" if i == 1 else z for i, z in enumerate(example.zone)]).to_csv(bad, index=False)
    act(driver, None, [bad], "Predict the minutes", "bad_zone.csv: column 'zone', row 2: 'moon' is not one of")


def test_demand_page_forecasts_the_chosen_horizon(browser, service):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver, keys, c = browser["driver"], service["keys"], service["client"]
    driver = open_page(browser, "try_demand")
    act(driver, keys["operations"], None, "Forecast", "role 'operations' may not use the demand model")
    handle = driver.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    for _ in range(7): handle.send_keys(Keys.ARROW_LEFT)                # 28 days -> 21
    text = act(driver, keys["procurement"], None, "Forecast", "Forecast revenue over the next 21 days")
    direct = c.get("/v1/models/demand/forecast", params={"horizon": 21}, headers={"X-API-Key": keys["procurement"]}).json()
    assert f"{fmt(sum(d['forecast'] for d in direct['forecast']))} NOK" in text
    got = csv_download(driver, "demand_forecast_21_days.csv")
    assert got.date.tolist() == [d["date"] for d in direct["forecast"]]
    np.testing.assert_allclose(got.lo80_nok, [d["lo80"] for d in direct["forecast"]])
    assert driver.find_elements(By.CSS_SELECTOR, ".widget-output img, .jupyter-widgets-output-area img")   # the chart
    screenshot(driver, "try_demand")
    assert audit_lines(service, "GET /v1/models/demand/forecast")[:2] == [("operations", 403), ("procurement", 200)]
