"""The recommendations branch of the pipeline, built on env.test.yaml: its products and metrics, the split in time (no
purchase of the test window reaches the model), and the generator's promise that preferences leave demand unchanged."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, error_outputs, image_outputs, product_at
from kronkers_ml.demand.data import clean_transactions
from kronkers_ml.demand.generator import purchase_probabilities, simulate_transactions
from kronkers_ml.recommendations.evaluate import load_model, load_ranker, load_segments
from kronkers_ml.recommendations.family import RecommendationsModel
from kronkers_ml.recommendations.models import candidate_frame, ease_weights, history, rfm_segments
from kronkers_ml.recommendations.split import purchases

TASKS = ["train-recommendations", "evaluate-recommendations"]
METHODS = ["popularity", "buy_again", "segment_popularity"]
ENV = yaml.safe_load((ROOT / "env.test.yaml").read_text())
SETTINGS, SEGMENTS = ENV["recommendations"], ENV["segments"]
CANDIDATES = ["ease", "als", "lambdarank"]


@pytest.fixture(scope="module")
def metrics(built) -> dict:
    return json.loads(product_at(built, "recommendations.metrics").read_text())


@pytest.fixture(scope="module")
def bought(built) -> pd.DataFrame:
    return purchases(pd.read_parquet(product_at(built, "demand.transactions")))


def test_tasks_leave_executed_notebooks_with_plots(built):
    for task in TASKS:
        nb = built / "nb" / f"{task}.ipynb"
        assert not error_outputs(nb), task
        assert (built / "nb" / f"{task}.html").stat().st_size > 0, task
    assert len(image_outputs(built / "nb" / "evaluate-recommendations.ipynb")) >= 1
    assert len(image_outputs(built / "nb" / "train-recommendations.ipynb")) >= 1


def test_metrics_have_the_family_shape(metrics):
    k = SETTINGS["k"]
    assert metrics["family"] == "recommendations" and metrics["primary_metric"] == f"ndcg_at_{k}"
    candidates = {c: metrics["candidates"][c] for c in CANDIDATES}
    blocks = {"model": metrics["model"], "oracle": metrics["oracle"], **metrics["baselines"], **candidates}
    assert set(metrics["baselines"]) == set(METHODS)
    assert metrics["candidates"]["chosen_on_validation"] in CANDIDATES
    # the registered model is the candidate chosen on validation (ALS, which cannot be served, would leave it to EASE)
    name = metrics["model"]["name"]
    assert name == metrics["params"]["kind"] == {"als": "ease"}.get(metrics["candidates"]["chosen_on_validation"],
                                                                    metrics["candidates"]["chosen_on_validation"])
    assert metrics["candidates"][name][f"ndcg_at_{k}"] == metrics["model"][f"ndcg_at_{k}"]
    assert set(metrics["challengers"]) == set(CANDIDATES) - {name}
    # the rolling cut-offs end with the test window's, where the model refitted scores what the model scored
    rolling = metrics["rolling"]
    assert len(rolling["cutoffs"]) == SETTINGS["rolling_cutoffs"] + 1 and rolling["cutoffs"][-1] == metrics["data"]["test_from"]
    last = {r["method"]: r for r in rolling["per_cutoff"] if r["cutoff"] == metrics["data"]["test_from"]}
    assert last[name][f"ndcg_at_{k}"] == pytest.approx(metrics["model"][f"ndcg_at_{k}"], abs=1e-6)
    assert set(rolling["methods"]) == {"ease", "lambdarank", *METHODS}
    for name, block in blocks.items():
        for key in (f"ndcg_at_{k}", f"recall_at_{k}", f"map_at_{k}", f"discovery_ndcg_at_{k}", "coverage"):
            assert 0 <= block[key] <= 1, (name, key, block[key])
        # every method is scored on the same customers: those who bought in the test window
        assert block["customers"] == metrics["data"]["customers_test"] > 0, name
    # buy-again lists only what the customer bought: with its history removed it has nothing of its own to offer, so its
    # discovery lists are the popular ones
    assert metrics["baselines"]["buy_again"][f"discovery_ndcg_at_{k}"] == pytest.approx(
        metrics["baselines"]["popularity"][f"discovery_ndcg_at_{k}"])


def test_the_test_window_is_the_newest_days_and_nothing_of_it_reaches_the_model(built, bought, metrics):
    training = json.loads(product_at(built, "recommendations.training").read_text())
    test_from, last = pd.Timestamp(metrics["data"]["test_from"]), pd.Timestamp(metrics["data"]["test_to"])
    assert last == bought.date.max() and (last - test_from).days + 1 == SETTINGS["test_days"]
    assert pd.Timestamp(training["split"]["valid_start"]) == test_from - pd.Timedelta(days=SETTINGS["valid_days"])
    assert metrics["data"]["rows_train"] == int((bought.date < test_from).sum())
    model = load_model(product_at(built, "recommendations.model"))
    assert model["cutoff"] == test_from
    customers = pd.Index(sorted(bought.customer_id.unique()))
    # the saved weights are exactly those of the purchases before the test window ...
    before = bought[bought.date < test_from]
    b = ease_weights(history(before, test_from, customers, model["items"]).bought, model["lam"])
    assert np.allclose(model["b"], b)
    # ... and the test window's purchases (here: shuffled into other customers and products) change nothing
    after = bought[bought.date >= test_from]
    scrambled = after.assign(customer_id=after.customer_id.sample(frac=1, random_state=0).to_numpy(),
                             product_id=after.product_id.sample(frac=1, random_state=1).to_numpy())
    h1 = history(pd.concat([before, scrambled]), test_from, customers, model["items"])
    h0 = history(before, test_from, customers, model["items"])
    assert (h1.bought != h0.bought).nnz == 0 and (h1.weight != h0.weight).nnz == 0
    assert np.array_equal(h1.popularity, h0.popularity)


def scramble(after: pd.DataFrame) -> pd.DataFrame:
    "The test window's purchases shuffled into other customers, products and amounts."
    return after.assign(customer_id=after.customer_id.sample(frac=1, random_state=0).to_numpy(),
                        product_id=after.product_id.sample(frac=1, random_state=1).to_numpy(),
                        revenue=after.revenue.sample(frac=1, random_state=2).to_numpy() * 3)


def test_segments_and_candidate_features_see_nothing_of_the_test_window(built, metrics):
    """The segments of segment popularity (and of the re-ranker's features) are those of the purchases before the test
    window: the saved ones are recomputed from them alone, and scrambling the window changes neither them nor a feature."""
    test_from = pd.Timestamp(metrics["data"]["test_from"])
    lines = purchases(pd.read_parquet(product_at(built, "demand.transactions")), values=True)
    before, after = lines[lines.date < test_from], lines[lines.date >= test_from]
    assert len(after) > 0
    kw = dict(k_min=SEGMENTS["k_min"], k_max=SEGMENTS["k_max"], nstart=SEGMENTS["nstart"],
              silhouette_sample=SEGMENTS["silhouette_sample"], seed=ENV["seed"])
    saved = pd.read_parquet(product_at(built, "recommendations.segments")).set_index("customer_id")["segment_name"]
    clean = rfm_segments(before, test_from, **kw)
    leaky = rfm_segments(pd.concat([before, scramble(after)]), test_from, **kw)
    pd.testing.assert_series_equal(saved, clean, check_names=False)
    pd.testing.assert_series_equal(leaky, clean)
    assert metrics["segments"]["cutoff"] == metrics["data"]["test_from"]
    # the re-ranker's candidates and features
    model = load_model(product_at(built, "recommendations.model"))
    customers = pd.Index(sorted(lines.customer_id.unique()))
    rows = np.unique(customers.get_indexer(after.customer_id))[:50]
    h = history(before, test_from, customers, model["items"])
    frames = [candidate_frame(h, log, rows, model["b"], model["repeat_weight"], 5, segs, SETTINGS["test_days"])
              for log, segs in ((before, clean), (pd.concat([before, scramble(after)]), leaky))]
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_the_served_model_sees_nothing_of_the_test_window(built, metrics):
    """The registered model, given every purchase up to the end of the log with the test window scrambled, answers
    exactly what it answers from the purchases before the window (what the service holds)."""
    test_from = pd.Timestamp(metrics["data"]["test_from"])
    lines = purchases(pd.read_parquet(product_at(built, "demand.transactions")), values=True)
    before, after = lines[lines.date < test_from], lines[lines.date >= test_from]
    spec = json.loads(product_at(built, "recommendations.history_spec").read_text())
    parts = (load_model(product_at(built, "recommendations.model")), spec, load_ranker(product_at(built, "recommendations.ranker")),
             load_segments(product_at(built, "recommendations.segments")))
    served = [RecommendationsModel().setup(parts[0], log, *parts[1:]) for log in (before, pd.concat([before, scramble(after)]))]
    customers = list(after.customer_id.drop_duplicates()[:100]) + ["no-such-customer"]
    answers = [m.recommend_many(customers, 10) for m in served]
    pd.testing.assert_frame_equal(answers[0], answers[1])
    assert served[0].kind == metrics["model"]["name"] and set(answers[0]["source"]) == {"model", "popular"}


def test_oracle_covers_what_the_test_window_sold(built, bought, metrics):
    oracle = pd.read_parquet(product_at(built, "recommendations.oracle"))
    test = bought[bought.date >= pd.Timestamp(metrics["data"]["test_from"])]
    assert oracle.probability.between(0, 1).all()
    # every invoice of the window goes to some customer in each replay: every product sold there has a probability
    assert set(test.product_id) <= set(oracle.product_id)
    assert not oracle.duplicated(["customer_id", "product_id"]).any()


def test_preferences_leave_every_demand_figure_unchanged():
    kw = dict(start="2024-01-01", days=90, invoices_per_day=30, n_products=40, n_customers=300, seed=11)
    with_prefs, without = (clean_transactions(simulate_transactions(preferences=p, **kw))[0] for p in (True, False))
    for cols in (["date"], ["date", "region"]):
        pd.testing.assert_series_equal(with_prefs.groupby(cols).revenue.sum(), without.groupby(cols).revenue.sum())
    # ... while who bought what follows the preferences: customers concentrate on fewer categories than at random
    cat = simulate_transactions(faults=False, **kw), simulate_transactions(faults=False, preferences=False, **kw)
    top_share = [log.groupby(["customer_id", "category"]).size().groupby(level=0).apply(lambda s: s.max() / s.sum()).mean()
                 for log in cat]
    assert top_share[0] > top_share[1] + 0.05, top_share
    assert purchase_probabilities("2024-03-01", "2024-03-31", n_replicates=2, **kw).probability.gt(0).all()
