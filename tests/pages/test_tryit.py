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
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, running_service, voila
from test_dashboards import chrome, page_problems, render, screenshot, wait_for_text
from kronkers_ml.pages.dashboards import fmt
from kronkers_ml.platform.access import create_key, load_roles, read_audit
from kronkers_ml.platform.registry import champion_version, history, set_champion
from kronkers_ml.returns.family import returns_heldout

ROLES = ROOT / "config" / "roles.yaml"
TRY_PAGES = ["try_returns", "try_service_time", "try_demand", "try_recommendations"]


@pytest.fixture(scope="module")
def service(built, tmp_path_factory):
    """`kronkers serve` on a copy of the build's registry, with keys for operations, procurement and marketing. The
    tiny build's 3-epoch classifier (and its recommender) is promoted only when it beats the baselines; when it did
    not, its version is made champion here (in the copy) so that the page has a model to ask."""
    home = tmp_path_factory.mktemp("tryit-service")
    (home / "mlflow").mkdir()
    shutil.copy2(built / "mlflow" / "mlflow.db", home / "mlflow" / "mlflow.db")
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    for model in ("returns", "recommendations"):
        if champion_version(uri, model) is None:
            set_champion(uri, model, str(history(uri, model).iloc[0].version), "test", "the try-it page needs a served model")
    roles = load_roles(ROLES)
    keys = {r: create_key(home / "service" / "keys.json", r, roles, f"test {r}")[1] for r in ("operations", "procurement", "marketing")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    args = ["--out", str(home), "--roles", str(ROLES), "--state-dir", str(home / "service")]
    with running_service(args, home / "service.log", env, timeout_s=240) as client:
        yield {"client": client, "keys": keys, "audit": home / "service" / "audit.jsonl", "url": str(client.base_url).rstrip("/")}


@pytest.fixture(scope="module")
def browser(built, service, tmp_path_factory):
    with voila(built, service_url=service["url"], preheat_only="try_") as (base, token):   # the other pages: a kernel per visit
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
    return pd.read_csv(io.BytesIO(base64.b64decode(payload)),
                       dtype={"stop_id": str, "route_id": str, "product_id": str, "customer_id": str})


def choose(driver, select, starts: str) -> str:
    "Choose the option of the `<select>` element `select` whose text starts with `starts`; its text."
    from selenium.webdriver.support.ui import Select
    option = next((o for o in Select(select).options if o.text.startswith(starts)), None)
    assert option is not None, (starts, [o.text for o in Select(select).options][:20])
    Select(select).select_by_visible_text(option.text)
    return option.text


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


def test_service_time_page_predicts_an_uploaded_route_and_a_route_of_the_data(browser, built, service):
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
    pick_a_day_and_route(driver, built, service)


def pick_a_day_and_route(driver, built, service):
    """On the service-time page: a day that is not the newest, its last route; the total is the service's own answer for
    that route's stops, and the minutes measured at its doors are the data's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from kronkers_ml.service_time.family import day_routes, route_stops, stop_rows
    keys, c = service["keys"], service["client"]
    rows = stop_rows(built)
    table = day_routes(rows)
    days = list(dict.fromkeys(table.date))                              # newest first, as the page lists them
    day = days[min(1, len(days) - 1)]
    route = str(table[table.date == day].route_id.iloc[-1])
    from selenium.common.exceptions import StaleElementReferenceException
    selects = lambda: driver.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")[:2]   # found again: a new day redraws the routes
    day_select = selects()[0]
    assert day_select.find_elements(By.TAG_NAME, "option")[0].text.startswith(f"{days[0]:%a %d %b %Y}")
    choose(driver, day_select, f"{day:%a %d %b %Y}")
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: any(o.text.startswith(f"{route} (") for o in selects()[1].find_elements(By.TAG_NAME, "option")))
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: choose(driver, selects()[1], f"{route} ("))
    stops = route_stops(rows, day, route, measured=True)
    direct = pd.read_csv(io.StringIO(c.post("/v1/models/service-time/predict.csv",
                                            content=stops.drop(columns="measured_minutes").to_csv(index=False).encode(),
                                            headers={"X-API-Key": keys["operations"], "Content-Type": "text/csv"}).text))
    total, n = direct.service_time_s.sum() / 60, len(direct)
    text = act(driver, None, None, "Predict this route",
               f"Route {route}: {n:,} stops, {fmt(total)} minutes at the doors by the model against {fmt(7 * n)} by the 7-minute rule")
    measured = stops.measured_minutes
    assert measured.notna().any()                                     # the build's feature rows are measured visits
    part = f" at the {measured.notna().sum()} stops measured" if measured.isna().any() else ""
    assert f"The drivers took {fmt(measured.sum())} minutes (measured{part})" in text, text[-2500:]
    got = csv_download(driver, f"service_time_route_{route}_{day:%Y-%m-%d}.csv")
    assert got.stop_id.tolist() == stops.stop_id.astype(str).tolist()
    np.testing.assert_allclose(got.predicted_minutes, (direct.service_time_s / 60).round(2), atol=0.006)
    np.testing.assert_allclose(got.measured_minutes, measured.round(2), atol=0.006)
    assert audit_lines(service, "POST /v1/models/service-time/predict.csv")[-1] == ("operations", 200)


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


def test_recommendations_page_recommends_products_for_a_customer(browser, built, service):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    driver, keys, c = browser["driver"], service["keys"], service["client"]
    driver = open_page(browser, "try_recommendations")
    lines = pd.read_parquet(built / "demand" / "transactions.parquet", columns=["customer_id", "product_id", "unit_price"])
    often = lines.customer_id.value_counts()
    customer = str(often.index[often == often.max()].min())            # the first example: who bought most often
    picked = choose(driver, driver.find_element(By.CSS_SELECTOR, ".widget-dropdown select"), customer)
    assert picked.startswith(f"{customer}: bought {often.max():,} times"), picked
    field = driver.find_element(By.CSS_SELECTOR, "input[type=text]")
    WebDriverWait(driver, 30).until(lambda d: field.get_attribute("value") == customer)     # the example fills the id in
    k = driver.find_element(By.CSS_SELECTOR, "input[type=number]")
    k.send_keys(Keys.BACKSPACE * 3, "5", Keys.TAB)
    act(driver, keys["operations"], None, "Recommend products", "role 'operations' may not use the recommendations model")
    text = act(driver, keys["marketing"], None, "Recommend products", f"Customer {customer}: 5 products chosen from their own purchase history")
    direct = c.get(f"/v1/models/recommendations/{customer}", params={"k": 5}, headers={"X-API-Key": keys["marketing"]}).json()
    assert direct["source"] == "model" and f"the model's data ends on {direct['cutoff']}" in text
    got = csv_download(driver, f"recommendations_{customer}.csv")
    assert got.product_id.tolist() == [i["product_id"] for i in direct["items"]] and got["rank"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(got.score, [i["score"] for i in direct["items"]], atol=1e-6)
    price = lines.groupby("product_id").unit_price.median()              # what the build knows of each product
    np.testing.assert_allclose(got.price, price[got.product_id].round(2), atol=0.006)
    assert (got.customer_id == customer).all() and (got.source == "model").all()
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.kronkers-tryit tbody tr")) == 5
    screenshot(driver, "try_recommendations")
    new = "K-NEW-0001"                                                    # a customer the model has no purchases of
    assert new not in set(lines.customer_id.dropna())
    field.clear(); field.send_keys(new, Keys.TAB)
    text = act(driver, None, None, "Recommend products", f"Customer {new} bought nothing the model knows of")
    popular = c.get(f"/v1/models/recommendations/{new}", params={"k": 5}, headers={"X-API-Key": keys["marketing"]}).json()
    assert popular["source"] == "popular" and "most popular of the recent weeks" in text
    assert csv_download(driver, f"recommendations_{new}.csv").product_id.tolist() == [i["product_id"] for i in popular["items"]]
    assert audit_lines(service, "GET /v1/models/recommendations/{customer_id}")[:3] == [("operations", 403), ("marketing", 200), ("marketing", 200)]
