"""The recommendations dashboard page (reports/recommendations.ipynb) on the session's tiny build: its headline,
hit rate and campaign figures are those of the build's products, computed here from the library's own ranking, and
the build renders it to the static archive with a card on the overview."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from conftest import ROOT, product_at, registered_scores
from kronkers_ml.recommendations.evaluate import load_model
from kronkers_ml.recommendations.models import history, top_k
from kronkers_ml.recommendations.split import purchases
from pages.test_reports import run_report

PAGE = ROOT / "reports" / "recommendations.ipynb"


def _hit_rate(built, metrics) -> float:
    "Share of the test window's buyers who bought one of their top k, ranked from the registered history."
    m = load_model(product_at(built, "recommendations.model"))
    spec = json.loads(product_at(built, "recommendations.history_spec").read_text())
    past = pd.read_parquet(product_at(built, "recommendations.history"))
    h = history(past, m["cutoff"], pd.Index(sorted(past["customer_id"].astype(str).unique())), m["items"],
                spec["half_life_days"], spec["recent_days"])
    b = purchases(pd.read_parquet(product_at(built, "demand.transactions")))
    test = b[(b["date"] >= metrics["data"]["test_from"]) & (b["date"] <= metrics["data"]["test_to"])]
    k, hits = int(metrics["params"]["k"]), []
    for customer, bought in test.groupby("customer_id")["product_id"]:
        row = int(h.customers.get_indexer([customer])[0])
        if row < 0:                                           # no history: the popular list (counted the same way)
            scores = np.tile(h.popularity, (1, 1)).astype(float)
        else:
            scores = registered_scores(built, past, h, np.array([row]))
        top = {h.items[i] for i in top_k(scores, k, h.catalogue)[0] if i >= 0}
        hits.append(bool(top & set(bought)))
    return float(np.mean(hits))


def test_the_page_shows_the_built_figures(built, tmp_path):
    text = "\n".join(run_report(PAGE, built, tmp_path))
    metrics = json.loads(product_at(built, "recommendations.metrics").read_text())
    summary = json.loads(product_at(built, "recommendations.campaign_summary").read_text())
    k = int(metrics["params"]["k"])
    assert f"{metrics['model'][f'recall_at_{k}'] * 100:,.1f}% of what shoppers bought was in their top {k}" in text
    assert f"{metrics['baselines']['popularity'][f'recall_at_{k}'] * 100:,.1f}%" in text
    assert f"{metrics['data']['customers_test']:,} customers who shopped" in text
    assert f"{_hit_rate(built, metrics):.1%}" in text                       # the hit rate of all customers
    assert text.count("<b>Customer ") == 3                                  # the page's default of three examples
    assert f"{summary['campaign']['contacted']:,} customers over" in text and summary["stock"]["verdict"] in text
    assert "Figure" in text


def test_the_build_renders_the_page_and_the_overview_card(built):
    page = product_at(built, "reports.recommendations").read_text()
    metrics = json.loads(product_at(built, "recommendations.metrics").read_text())
    assert f"{metrics['model']['recall_at_10'] * 100:,.1f}% of what shoppers bought" in page
    overview = product_at(built, "reports.overview").read_text()
    assert "Recommendations:" in overview and 'href="recommendations.html"' in overview
