"""The returns tasks of the tiny pipeline (env.test.yaml): executed notebooks, plots, products, metrics."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import error_outputs, image_outputs
from kronkers_ml.returns_data import CATEGORIES, read_arrays
from kronkers_ml.returns_model import load_classifier

TASKS = {"get-returns-data": 1, "train-returns": 1, "evaluate-returns": 3}   # task: plots it must show


def test_returns_tasks_leave_executed_notebooks_with_their_plots(built):
    for task, n_plots in TASKS.items():
        nb = built / "nb" / f"{task}.ipynb"
        assert nb.stat().st_size > 0 and (built / "nb" / f"{task}.html").stat().st_size > 0, task
        assert not error_outputs(nb), f"{task}: {error_outputs(nb)}"
        assert len(image_outputs(nb)) >= n_plots, f"{task}: {len(image_outputs(nb))} plots"


@pytest.fixture(scope="module")
def metrics(built) -> dict:
    return json.loads((built / "returns" / "metrics.json").read_text())


def test_data_summary_counts_and_hashes(built):
    summary = json.loads((built / "returns" / "data.json").read_text())
    assert summary["classes"] == CATEGORIES
    assert summary["train"]["per_class"] == {c: 20 for c in CATEGORIES}
    assert summary["test"]["per_class"] == {c: 20 for c in CATEGORIES}
    assert len(summary["train"]["sha256"]) == 64 and summary["train"]["sha256"] != summary["test"]["sha256"]
    x, y = read_arrays(built / "returns" / "train.npz")
    assert x.shape == (100, 28, 28) and np.bincount(y).tolist() == [20] * 5


def test_metrics_file_has_the_documented_shape(metrics):
    assert metrics["family"] == "returns" and metrics["primary_metric"] == "accuracy"
    assert metrics["classes"] == CATEGORIES
    assert metrics["train_images"] == 100 and metrics["test_images"] == 100
    model = metrics["model"]
    for key in ("name", "architecture", "init", "image_size", "epochs", "train_seconds", "device", "threads"):
        assert key in model, key
    assert model["image_size"] == 32 and model["epochs"] == 2 and model["train_seconds"] > 0
    assert set(metrics["models"]) == {model["name"], "majority", "linear"}
    for name, scores in metrics["models"].items():
        assert 0 <= scores["accuracy"] <= 1, name
        assert set(scores["per_class"]) == set(CATEGORIES)
        assert all(set(v) == {"precision", "recall", "support"} for v in scores["per_class"].values())
        assert sum(v["support"] for v in scores["per_class"].values()) == 100
    assert metrics["models"]["majority"]["accuracy"] == pytest.approx(0.2)
    cm = metrics["confusion_matrix"]
    assert cm["labels"] == CATEGORIES and np.array(cm["counts"]).shape == (5, 5) and np.sum(cm["counts"]) == 100
    assert np.trace(cm["counts"]) / 100 == pytest.approx(model["accuracy"])
    review = metrics["review"]
    assert review["threshold"] == 0.9 and 0 <= review["auto_share"] <= 1


def test_metrics_are_computed_from_the_saved_predictions(built, metrics):
    pred = pd.read_parquet(built / "returns" / "predictions.parquet")
    assert len(pred) == metrics["test_images"]
    assert (pred.category == pred.predicted).mean() == pytest.approx(metrics["model"]["accuracy"])
    assert (pred.category == pred.linear).mean() == pytest.approx(metrics["models"]["linear"]["accuracy"])
    probs = pred[[f"p_{c}" for c in CATEGORIES]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.allclose(probs.max(1), pred.confidence)
    auto = pred.confidence >= metrics["review"]["threshold"]
    assert auto.mean() == pytest.approx(metrics["review"]["auto_share"])


def test_saved_model_classifies_the_inbox(built, metrics):
    inbox = sorted((built / "returns" / "inbox").glob("*.png"))
    assert len(inbox) == 40
    classifier = load_classifier(built / "returns" / "model.pt", device="cpu")
    assert classifier.version == metrics["model"]["version"]
    names, confidence = classifier.predict([Image.open(p) for p in inbox])
    assert len(names) == 40 and set(names) <= set(CATEGORIES) and confidence.shape == (40,)
