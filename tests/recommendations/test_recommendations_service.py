"""The recommendations family on the platform: its registration through the generic gate (both ways), and the
route GET /v1/models/recommendations/{customer_id} on a real socket (roles, audit, cold start, bad k, the ranking).

Uses the session's tiny build (`built`) for the data and the trained model, and a fresh MLflow store of its own."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, registered_scores, running_service
from kronkers_ml.families import FAMILIES
from kronkers_ml.platform.access import create_key, load_roles, read_audit
from kronkers_ml.platform.registry import champion_version, register_and_gate
from kronkers_ml.platform.tracking import artifact_root, log_training_run, use_store
from kronkers_ml.products import product_path
from kronkers_ml.recommendations.evaluate import load_model, save_model
from kronkers_ml.recommendations.family import log_recommendations_model, recommendations_heldout, save_history
from kronkers_ml.recommendations.models import history, popularity_scores, top_k
from kronkers_ml.recommendations.split import purchases

ROLES = ROOT / "config" / "roles.yaml"
ROUTE = "/v1/models/recommendations/{}"


@pytest.fixture(scope="module")
def reg(built, tmp_path_factory) -> dict:
    """A fresh store: v1 = EASE with no item weights and no buy-again term (the popularity list), v2 = the model the
    build registered (the candidate chosen on validation)."""
    out = tmp_path_factory.mktemp("recs-registry")
    uri = f"sqlite:///{out}/mlflow/mlflow.db"
    use_store(uri, "recommendations", artifact_root(out))
    metrics = json.loads(product_path("recommendations.metrics", built).read_text())
    bought = purchases(pd.read_parquet(product_path("demand.transactions", built)), values=True)
    heldout = recommendations_heldout(bought, metrics)
    trained, hist = product_path("recommendations.model", built), product_path("recommendations.history", built)
    m = load_model(trained)
    weak = out / "weak" / "model.npz"
    weak.parent.mkdir()
    save_model(weak, np.zeros_like(m["b"]), m["items"], m["lam"], 0.0, m["cutoff"])
    weak_hist = save_history(bought, weak, weak.with_name("history.parquet"), heldout.half_life_days, heldout.recent_days)["history"]

    def register(model_path, history_path):
        run = log_training_run("recommendations", {"seed": 7}, metrics, lambda: log_recommendations_model(model_path, history_path))
        return register_and_gate(uri, FAMILIES["recommendations"], run["model_uri"], run["run_id"], metrics, heldout)

    first, second = register(weak, weak_hist), register(trained, hist)
    return {"out": out, "built": built, "uri": uri, "metrics": metrics, "bought": bought, "model": m, "first": first, "second": second,
            "spec": json.loads(product_path("recommendations.history_spec", built).read_text())}


def test_the_pipeline_registers_through_the_gate_on_ndcg(built):
    reg = json.loads(product_path("recommendations.registration", built).read_text())
    metrics = json.loads(product_path("recommendations.metrics", built).read_text())
    assert reg["model"] == "recommendations" and reg["metric"] == "ndcg_at_10"
    assert reg["candidate"] == pytest.approx(metrics["model"]["ndcg_at_10"], rel=1e-9)
    assert set(reg["baselines"]) == {"popularity", "buy_again", "segment_popularity"}
    # the build's store may already hold a champion (an earlier build): the candidate must beat it too
    before = reg["champion_version_before"]
    assert (reg["champion"] is None) == (before is None)
    assert before is None or int(before) < int(reg["version"])
    beats = all(reg["candidate"] > v for v in reg["baselines"].values()) and (before is None or reg["candidate"] > reg["champion"])
    assert reg["decision"] == ("promoted" if beats else "rejected")
    assert reg["champion_version_after"] == (reg["version"] if beats else before)


def test_the_gate_refuses_a_model_no_better_than_a_baseline_and_promotes_the_trained_one(reg):
    first, second, metrics = reg["first"], reg["second"], reg["metrics"]
    # no item weights, no buy-again term: the popularity list itself, so not better than the popularity baseline
    assert first["decision"] == "rejected" and "popularity" in first["reason"]
    assert first["candidate"] == pytest.approx(metrics["baselines"]["popularity"]["ndcg_at_10"], rel=1e-9)
    assert first["champion_version_after"] is None
    assert second["candidate"] == pytest.approx(metrics["model"]["ndcg_at_10"], rel=1e-9)
    assert second["candidate"] > max(b["ndcg_at_10"] for b in metrics["baselines"].values()), "the tiny build's model must beat its baselines"
    assert second["decision"] == "promoted" and champion_version(reg["uri"], "recommendations") == second["version"]


@pytest.fixture(scope="module")
def service(reg):
    out = reg["out"]
    roles = load_roles(ROLES)
    keys = {r: create_key(out / "service" / "keys.json", r, roles, f"test {r}")[1]
            for r in ("marketing", "admin", "operations", "procurement")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": reg["uri"]}
    args = ["--out", str(out), "--roles", str(ROLES), "--models", "recommendations", "--state-dir", str(out / "service")]
    with running_service(args, out / "service.log", env, timeout_s=300) as client:
        yield {**reg, "client": client, "keys": keys}


def _get(service, customer, role="marketing", **params):
    headers = {"X-API-Key": service["keys"][role]} if role else {}
    return service["client"].get(ROUTE.format(customer), params=params, headers=headers)


def _before(service) -> pd.DataFrame:
    "The purchases before the model's cut-off."
    b = service["bought"]
    return b[b["date"] < service["model"]["cutoff"]]


def _library(service):
    "The served history as the library builds it: purchases before the model's cut-off."
    m, spec, before = service["model"], service["spec"], _before(service)
    return history(before, m["cutoff"], pd.Index(sorted(before["customer_id"].unique())), m["items"],
                   spec["half_life_days"], spec["recent_days"])


def test_marketing_and_admin_may_others_are_refused_and_every_call_is_audited(service):
    customer = service["bought"]["customer_id"].iloc[0]
    for role, code in (("marketing", 200), ("admin", 200), ("operations", 403), ("procurement", 403), (None, 401)):
        assert _get(service, customer, role, k=5).status_code == code, role
    audit = read_audit(service["out"] / "service" / "audit.jsonl")
    mine = audit[audit["endpoint"].astype(str).str.contains("/v1/models/recommendations/")]
    got = {(r, int(s)) for r, s in zip(mine["role"], mine["status"]) if isinstance(r, str)}
    assert {("marketing", 200), ("admin", 200), ("operations", 403), ("procurement", 403)} <= got
    assert set(mine["model"].dropna()) == {"recommendations"}


def test_a_known_customer_gets_the_library_ranking(service):
    """The registered model's ranking (the re-ranker on the tiny build, where it is chosen on validation), computed
    here from the library's functions: k products, best first."""
    h = _library(service)
    assert service["spec"]["kind"] == service["metrics"]["model"]["name"] == service["metrics"]["params"]["kind"]
    counts = np.asarray(h.bought.sum(axis=1)).ravel()
    fewest = np.flatnonzero(counts > 0)[np.argmin(counts[counts > 0])]
    for row in (int(np.argmax(counts)), int(fewest)):                          # the most products, and the fewest
        customer = h.customers[row]
        r = _get(service, customer, k=10)
        assert r.status_code == 200, r.text
        body = r.json()
        scores = registered_scores(service["built"], _before(service), h, np.array([row]))
        expected = [h.items[i] for i in top_k(scores, 10, h.catalogue)[0] if i >= 0]
        assert body["source"] == "model" and body["customer_id"] == customer and body["k"] == 10
        assert body["kind"] == service["spec"]["kind"]
        assert len(body["items"]) == 10 and [i["product_id"] for i in body["items"]] == expected
        got = [i["score"] for i in body["items"]]
        assert got == sorted(got, reverse=True)


def test_an_unknown_customer_gets_the_popular_products_and_is_told(service):
    h = _library(service)
    r = _get(service, "no-such-customer-0", k=7)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = [h.items[i] for i in top_k(popularity_scores(h, np.array([0])), 7, h.catalogue)[0] if i >= 0]
    assert body["source"] == "popular" and [i["product_id"] for i in body["items"]] == expected


@pytest.mark.parametrize("k", [0, 101, -3, "ten", 2.5])
def test_k_out_of_range_is_refused(service, k):
    r = _get(service, "no-such-customer-0", k=k)
    assert r.status_code == 422, (k, r.text)


def test_k_at_the_limit_returns_at_most_the_catalogue(service):
    r = _get(service, "no-such-customer-0", k=100)
    assert r.status_code == 200 and len(r.json()["items"]) == min(100, int(_library(service).catalogue.sum()))
