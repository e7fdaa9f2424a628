"""The returns tasks of the tiny pipeline (env.test.yaml): executed notebooks, plots, products, metrics."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, error_outputs, image_outputs, ploomber_build, product_at
from kronkers_ml.monitoring.monitor import monitor
from kronkers_ml.monitoring.profiles import latest_profile
from kronkers_ml.returns.batch import read_results
from kronkers_ml.returns.data import CATEGORIES, dim_images, read_arrays, scored_photos
from kronkers_ml.returns.model import load_classifier

TASKS = {"get-returns-data": 1, "train-returns": 1, "evaluate-returns": 3}   # task: plots it must show


def test_returns_tasks_leave_executed_notebooks_with_their_plots(built):
    for task, n_plots in TASKS.items():
        nb = built / "nb" / f"{task}.ipynb"
        assert nb.stat().st_size > 0 and (built / "nb" / f"{task}.html").stat().st_size > 0, task
        assert not error_outputs(nb), f"{task}: {error_outputs(nb)}"
        assert len(image_outputs(nb)) >= n_plots, f"{task}: {len(image_outputs(nb))} plots"


@pytest.fixture(scope="module")
def metrics(built) -> dict:
    return json.loads(product_at(built, "returns.metrics").read_text())


def test_data_summary_counts_and_hashes(built):
    summary = json.loads(product_at(built, "returns.data").read_text())
    assert summary["classes"] == CATEGORIES
    assert summary["train"]["per_class"] == {c: 20 for c in CATEGORIES}
    assert summary["test"]["per_class"] == {c: 20 for c in CATEGORIES}
    assert len(summary["train"]["sha256"]) == 64 and summary["train"]["sha256"] != summary["test"]["sha256"]
    x, y = read_arrays(product_at(built, "returns.train"))
    assert x.shape == (100, 28, 28) and np.bincount(y).tolist() == [20] * 5


def test_metrics_file_has_the_documented_shape(metrics):
    assert metrics["family"] == "returns" and metrics["primary_metric"] == "accuracy"
    assert metrics["classes"] == CATEGORIES
    assert metrics["train_images"] == 100 and metrics["test_images"] == 100
    model = metrics["model"]
    for key in ("name", "architecture", "init", "image_size", "epochs", "train_seconds", "device", "threads"):
        assert key in model, key
    assert model["image_size"] == 32 and model["epochs"] == 3 and model["train_seconds"] > 0
    assert model["ema"] == 0.9 and model["sam"] == 0.05   # env.test.yaml's weight average and sharpness-aware steps
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
    pred = pd.read_parquet(product_at(built, "returns.predictions"))
    assert len(pred) == metrics["test_images"]
    assert (pred.category == pred.predicted).mean() == pytest.approx(metrics["model"]["accuracy"])
    assert (pred.category == pred.linear).mean() == pytest.approx(metrics["models"]["linear"]["accuracy"])
    probs = pred[[f"p_{c}" for c in CATEGORIES]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.allclose(probs.max(1), pred.confidence)
    auto = pred.confidence >= metrics["review"]["threshold"]
    assert auto.mean() == pytest.approx(metrics["review"]["auto_share"])


def test_saved_model_classifies_the_inbox(built, metrics):
    inbox = sorted(product_at(built, "returns.inbox").glob("*.png"))
    assert len(inbox) == 40
    classifier = load_classifier(product_at(built, "returns.model"), device="cpu")
    assert classifier.version == metrics["model"]["version"]
    names, confidence = classifier.predict([Image.open(p) for p in inbox])
    assert len(names) == 40 and set(names) <= set(CATEGORIES) and confidence.shape == (40,)


# --- monitoring: the gate, the profiles, the reviewed categories, drift and performance -------------------------

def test_returns_gate_profiles_and_reviewed_categories_are_in_the_build(built):
    report = json.loads(product_at(built, "monitoring.quality.returns").read_text())
    assert report["passed"] and report["checked_on"] == "every photo" and report["rows"]["photos"] == 200
    assert {r["dataset"] for r in report["results"]} == {"photos"} and report["n_constraints"] >= 15
    for dataset in ("photos", "scored_test", "scored_batch"):
        assert latest_profile(built, "returns", dataset) is not None, dataset
    _, y_test = read_arrays(product_at(built, "returns.test"))
    labels = pd.read_csv(product_at(built, "returns.inbox_labels"))      # what staff would record on review
    assert labels.category.tolist() == [CATEGORIES[y_test[int(f[7:12])]] for f in labels.file]
    reviewed = pd.read_parquet(product_at(built, "returns.batch.reviewed"))
    results = read_results(product_at(built, "returns.batch.results"))
    assert len(reviewed) == int((results.status == "ok").sum()) == 40
    merged = reviewed.merge(results, on="file", suffixes=("", "_batch"))
    assert (merged.predicted == merged.category_batch).all() and merged.category.isin(CATEGORIES).all()


def test_monitor_is_quiet_on_the_build_flags_a_dim_camera_and_a_worse_model(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out, symlinks=True)
    check = lambda **kw: monitor(ROOT / "env.test.yaml", ["returns"], str(out), retrain_on_breach=False, **kw)["families"]["returns"]
    quiet = check()
    assert quiet["drift"]["checked"] and not quiet["drift"]["breach"], quiet["drift"]
    assert not quiet["performance"]["checked"] and "100+" in quiet["performance"]["reason"]   # 40 photos a night here
    x_test, _ = read_arrays(product_at(out, "returns.test"))
    dim = dim_images(x_test, 0.6)                                       # the returns desk's camera got darker
    cats, conf = load_classifier(product_at(out, "returns.model"), device="cpu").predict(list(dim))
    drifted = check(current=scored_photos(dim, cats, conf, pd.Timestamp.now().normalize()))["drift"]
    assert drifted["breach"] and "mean_grey" in drifted["drifted"], drifted
    today = pd.Timestamp.now().normalize()
    night = lambda wrong: pd.DataFrame({"date": today, "category": ["tops"] * 60 + ["boots"] * 60, "majority": "shirts",
                                        "predicted": ["tops"] * 60 + ["boots"] * (60 - wrong) + ["handbags"] * wrong})
    good = check(predictions=night(3))["performance"]
    assert good["checked"] and good["metric"] == "error_rate" and not good["breach"], good
    assert good["error_rate"] == pytest.approx(3 / 120)
    worse = check(predictions=night(60).assign(majority="boots"))["performance"]     # half wrong; the baseline half right
    assert worse["breach"] and "does not beat the baseline" in worse["reason"], worse


def test_a_washed_out_photo_stops_the_build_at_the_gate(tmp_path):
    data, rng = tmp_path / "photos", np.random.default_rng(0)
    for c in CATEGORIES:
        (data / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(data / c / f"{i}.png")
    Image.new("L", (40, 40), 255).save(data / "tops" / "washed_out.png")      # all white: no spread of grey
    out = tmp_path / "out"
    done = ploomber_build(out, "--env--returns--data_dir", str(data), "--partially", "train-returns", check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "get-returns-data" in text and "photos: ranges of column 'std_grey': expected [5, 128], observed [0.0" in text, text[-3000:]
    assert not product_at(out, "returns.train").exists() and not product_at(out, "returns.model").exists()
    report = json.loads(product_at(out, "monitoring.quality.returns").read_text())
    failed = {(r["constraint"], r["column"]) for r in report["results"] if not r["passed"]}
    assert not report["passed"] and failed == {("ranges", "std_grey"), ("ranges", "mean_grey")}, failed


def test_flip_tta_without_the_training_flip_is_refused_before_training(tmp_path):
    out = tmp_path / "out"
    done = ploomber_build(out, "--env--returns--flip", "false", "--partially", "train-returns", check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    # the settings object refuses the pair while the pipeline loads, before any task runs (TrainReturns.check)
    assert "returns.flip_tta" in text and "a model trained without the flip (returns.flip: false) has never met" in text, text[-3000:]
    assert not product_at(out, "returns.train").exists() and not product_at(out, "returns.model").exists()


def test_an_ensemble_of_two_networks_is_trained_saved_and_scored_as_one_classifier(tmp_path):
    out = tmp_path / "out"
    ploomber_build(out, "--env--returns--members", "2", "--partially", "evaluate-returns")
    training = json.loads(product_at(out, "returns.training").read_text())
    assert training["members"] == 2 and training["member_seeds"] == [training["seed"], training["seed"] + 1]
    assert len(training["member_step_loss"]) == 2
    assert training["train_seconds"] == pytest.approx(sum(training["member_seconds"]))
    clf = load_classifier(product_at(out, "returns.model"))
    assert clf.meta["members"] == 2 and len(clf.model.members) == 2
    metrics = json.loads(product_at(out, "returns.metrics").read_text())
    x_test, y_test = read_arrays(product_at(out, "returns.test"))
    assert metrics["model"]["members"] == 2 and metrics["model"]["version"] == clf.version
    alone = [(m.predict_proba(x_test).argmax(1) == y_test).mean() for m in clf.members()]
    assert metrics["model"]["member_accuracy"] == pytest.approx(alone)
    # the figure is the ensemble's: the mean of the two networks' probabilities, not either network alone
    assert metrics["model"]["accuracy"] == pytest.approx((clf.predict_proba(x_test).argmax(1) == y_test).mean())
    nb = out / "nb" / "train-returns.ipynb"
    assert not error_outputs(nb) and len(image_outputs(nb)) >= 1
