"""The campaign planner (plan-campaign, built on env.test.yaml): its figures add up to the customers it contacted, the
customers are those with the highest scores, and its report has its plot and a verdict that matches its numbers; and
POST /v1/campaigns/plan on a real socket (roles, bad input, figures that add up), served from the build's own store;
and the batch export GET /v1/campaigns/recommendations.csv (streamed, the single route's rankings, segments, roles)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, error_outputs, image_outputs, product_at, registered_scores, running_service
from kronkers_ml.recommendations.campaign import pick_customers, plan_by, plan_customers
from kronkers_ml.recommendations.evaluate import load_model
from kronkers_ml.recommendations.models import history
from kronkers_ml.recommendations.split import purchases

CAMPAIGN = yaml.safe_load((ROOT / "env.test.yaml").read_text())["campaign"]


@pytest.fixture(scope="module")
def plan(built) -> pd.DataFrame:
    return pd.read_parquet(product_at(built, "recommendations.campaign"))


@pytest.fixture(scope="module")
def summary(built) -> dict:
    return json.loads(product_at(built, "recommendations.campaign_summary").read_text())


def test_totals_and_segments_add_up_to_the_contacted_customers(plan, summary):
    assert len(plan) == summary["campaign"]["contacted"] == CAMPAIGN["n_customers"]
    assert plan["customer_id"].is_unique
    assert set(plan["product_id"]) <= set(summary["campaign"]["products"])
    np.testing.assert_allclose(plan["expected_revenue"], plan["hit_rate"] * plan["units"] * plan["price"], rtol=1e-9)
    np.testing.assert_allclose(plan["expected_units"], plan["hit_rate"] * plan["units"], rtol=1e-9)
    for col in ("expected_units", "expected_revenue"):
        assert summary["totals"][col] == pytest.approx(plan[col].sum(), rel=1e-9)
        assert sum(s[col] for s in summary["by_segment"]) == pytest.approx(plan[col].sum(), rel=1e-9)
    counts = {s["segment"]: s["customers"] for s in summary["by_segment"]}
    assert counts == plan["segment"].value_counts().to_dict()
    t = summary["totals"]
    assert t["revenue_lo"] <= t["expected_revenue"] <= t["revenue_hi"] and t["units_lo"] <= t["expected_units"] <= t["units_hi"]
    stock = summary["stock"]
    assert stock["extra_revenue"] == pytest.approx(t["expected_revenue"]) and stock["days"] == 7 * CAMPAIGN["weeks"]
    assert stock["extra_share_of_forecast"] == pytest.approx(t["expected_revenue"] / stock["forecast_revenue"])
    assert stock["verdict"].startswith("Stock can follow" if stock["days_over_band"] == 0 else "Stock may not follow")


def test_contacted_customers_have_the_highest_scores(built, plan, summary):
    """Rescored from the saved model (the registered kind: the re-ranker on the tiny build) and the log: nobody left out
    scores above anybody contacted."""
    model = load_model(product_at(built, "recommendations.model"))
    bought = purchases(pd.read_parquet(product_at(built, "demand.transactions")), values=True)
    training = json.loads(product_at(built, "recommendations.training").read_text())
    customers = pd.Index(sorted(bought.customer_id.unique()))
    s = training["settings"]
    h = history(bought, pd.Timestamp(training["split"]["last_day"]) + pd.Timedelta(days=1), customers, model["items"],
                s["half_life_days"], s["recent_days"])
    cols = model["items"].get_indexer(summary["campaign"]["products"])
    best = registered_scores(built, bought, h, np.arange(len(customers)))[:, cols].max(axis=1)   # the registered model's
    contacted = customers.isin(plan["customer_id"])
    assert best[~contacted].max() <= best[contacted].min() + 1e-12


def test_plan_adds_up_on_a_hand_made_case():
    "Three customers, two products: the expected figures are rate x units (x price) per customer and sum by segment."
    buys = pd.DataFrame({"customer_id": ["k1", "k2", "k3", "k3"], "product_id": ["a", "a", "b", "b"],
                         "date": pd.to_datetime(["2024-01-01"] * 4), "quantity": [1, 1, 1, 1]})
    h = history(buys, "2024-02-01", pd.Index(["k1", "k2", "k3"]), pd.Index(["a", "b"]))
    picked = pick_customers(h, np.zeros((2, 2)), 1.0, ["a", "b"], 3)
    rates = pd.DataFrame({"product_id": ["a", "b"], "recommended": [10, 4], "hits": [5, 1], "hit_rate": [0.5, 0.25]})
    values = pd.DataFrame({"product_id": ["a", "b"], "units": [2.0, 1.0], "price": [10.0, 8.0], "value": [20.0, 8.0]})
    p = plan_customers(picked, rates, values, pd.Series({"k1": "s1", "k2": "s1", "k3": "s2"}))
    assert dict(zip(p["customer_id"], p["expected_revenue"])) == {"k1": 10.0, "k2": 10.0, "k3": 2.0}
    by = plan_by(p, rates, draws=200, seed=0).set_index("segment")
    assert by.loc["s1", "expected_revenue"] == 20.0 and by.loc["s2", "expected_units"] == 0.25
    assert by["expected_revenue"].sum() == pytest.approx(plan_by(p, rates, None, draws=200).iloc[0]["expected_revenue"])


def test_task_leaves_an_executed_notebook_with_its_plot(built):
    nb = built / "nb" / "plan-campaign.ipynb"
    assert not error_outputs(nb)
    assert len(image_outputs(nb)) == 1


@pytest.fixture(scope="module")
def service(built, tmp_path_factory):
    "The service on the tiny build's own store (register-recommendations' champion) and its outputs, with a key per role."
    from kronkers_ml.platform.access import create_key, load_roles
    from kronkers_ml.platform.registry import champion_version
    from kronkers_ml.platform.tracking import tracking_uri
    uri = tracking_uri(built)
    if champion_version(uri, "recommendations") is None:
        pytest.fail("the tiny build registered no recommendations champion")
    state = tmp_path_factory.mktemp("campaign-service")
    roles_path = ROOT / "config" / "roles.yaml"
    keys = {r: create_key(state / "keys.json", r, load_roles(roles_path), f"test {r}")[1]
            for r in ("marketing", "admin", "operations", "procurement")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    args = ["--out", str(built), "--outputs", str(built), "--roles", str(roles_path), "--models", "recommendations",
            "--state-dir", str(state)]
    with running_service(args, state / "service.log", env, timeout_s=300) as client:
        yield {"client": client, "keys": keys, "state": state}


def _post(service, body, role="marketing"):
    headers = {"X-API-Key": service["keys"][role]} if role else {}
    return service["client"].post("/v1/campaigns/plan", json=body, headers=headers)


def test_campaign_route_roles_and_bad_input(service):
    for role, code in (("marketing", 200), ("admin", 200), ("operations", 403), ("procurement", 403), (None, 401)):
        assert _post(service, {"n_customers": 5, "weeks": 1}, role).status_code == code, role
    assert _post(service, {"products": ["no-such-product"], "n_customers": 5}).status_code == 422
    assert _post(service, {"n_customers": 0}).status_code == 422
    assert _post(service, {"weeks": 14}).status_code == 422
    too_long = _post(service, {"weeks": 13})            # the tiny forecast has 14 days
    assert too_long.status_code == 422 and "days of forecast" in too_long.json()["detail"]


def test_campaign_route_figures_add_up_to_its_customers(service, summary):
    r = _post(service, {"n_customers": 30, "weeks": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    customers = pd.DataFrame(body["customers"])
    assert len(customers) == body["contacted"] == 30 and customers["customer_id"].is_unique
    assert body["products"] == summary["campaign"]["products"]
    for col in ("expected_units", "expected_revenue"):
        assert body["totals"][col] == pytest.approx(customers[col].sum(), rel=1e-9)
        assert sum(s[col] for s in body["by_segment"]) == pytest.approx(customers[col].sum(), rel=1e-9)
    assert body["stock"]["extra_revenue"] == pytest.approx(body["totals"]["expected_revenue"])
    assert list(customers["score"]) == sorted(customers["score"], reverse=True)
    one = summary["campaign"]["products"][:1]
    only = _post(service, {"products": one, "n_customers": 3, "weeks": 1}).json()
    assert {c["product_id"] for c in only["customers"]} == set(one)


EXPORT = "/v1/campaigns/recommendations.csv"


def _export(service, role="marketing", **params):
    headers = {"X-API-Key": service["keys"][role]} if role else {}
    with service["client"].stream("GET", EXPORT, params=params, headers=headers) as r:
        pieces = list(r.iter_raw())
    return r, pieces, b"".join(pieces).decode()


def _frame(text):
    return pd.read_csv(io.StringIO(text), dtype={"customer_id": str, "product_id": str, "source": str})


def test_the_batch_export_streams_every_customer_as_the_single_route_ranks_them(built, service):
    r, pieces, text = _export(service, k=3)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), text[:500]
    assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked"   # streamed, not one string
    frame = _frame(text)
    assert list(frame.columns) == ["customer_id", "rank", "product_id", "score", "source"]
    known = history_customers(built)
    assert int(r.headers["X-Customers"]) == frame["customer_id"].nunique() == len(known)
    assert set(frame["customer_id"]) == set(known) and set(frame["source"]) == {"model"}
    assert all(r == [1, 2, 3] for r in frame.groupby("customer_id")["rank"].agg(list))
    headers = {"X-API-Key": service["keys"]["marketing"]}
    for customer in frame["customer_id"].drop_duplicates().sample(3, random_state=0):
        one = service["client"].get(f"/v1/models/recommendations/{customer}", params={"k": 3}, headers=headers).json()
        mine = frame[frame["customer_id"] == customer]
        assert list(mine["product_id"]) == [i["product_id"] for i in one["items"]]
        assert list(mine["score"]) == pytest.approx([i["score"] for i in one["items"]], abs=1e-6)


def test_the_batch_export_takes_customer_ids_and_a_segment(built, service):
    known = sorted(history_customers(built))
    _, _, text = _export(service, k=2, customer_id=[known[1], "no-such-customer", known[0], known[1]])
    frame = _frame(text)
    assert list(frame["customer_id"].drop_duplicates()) == [known[1], "no-such-customer", known[0]]
    assert set(frame.loc[frame["customer_id"] == "no-such-customer", "source"]) == {"popular"}
    seg = pd.read_csv(product_at(built, "demand.segments"), dtype={"customer_id": str}).set_index("customer_id")["segment_name"]
    name = seg.value_counts().index[0]
    r, _, text = _export(service, k=1, segment=name)
    assert r.status_code == 200, text
    assert set(_frame(text)["customer_id"]) == set(seg[seg == name].index) & set(known)
    r, _, text = _export(service, segment="no-such-segment")
    assert r.status_code == 422 and "no-such-segment" in text


def test_the_batch_export_roles_bad_input_and_audit(service):
    for role, code in (("marketing", 200), ("admin", 200), ("operations", 403), ("procurement", 403), (None, 401)):
        assert _export(service, role, k=1, customer_id=["x"])[0].status_code == code, role
    for k in (0, 101, "ten"):
        assert _export(service, k=k)[0].status_code == 422, k
    too_many = _export(service, customer_id=[f"K{i:06d}" for i in range(501)])   # an address of about 10 KB
    assert too_many[0].status_code == 422 and "at most 500" in too_many[2], too_many[2]
    from kronkers_ml.platform.access import read_audit
    audit = read_audit(service["state"] / "audit.jsonl")
    mine = audit[audit["endpoint"].astype(str) == f"GET {EXPORT}"]
    got = {(r, int(s)) for r, s in zip(mine["role"], mine["status"]) if isinstance(r, str)}
    assert {("marketing", 200), ("admin", 200), ("operations", 403), ("procurement", 403), ("marketing", 422)} <= got
    assert set(mine.loc[mine["status"].astype(int) == 200, "model"]) == {"recommendations"}


def history_customers(built) -> list[str]:
    "The customers with purchases before the served model's cut-off (history.parquet of register-recommendations)."
    return pd.read_parquet(product_at(built, "recommendations.history"))["customer_id"].astype(str).unique().tolist()
