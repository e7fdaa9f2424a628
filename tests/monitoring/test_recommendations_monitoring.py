"""Monitoring of recommendations on the tiny pipeline: drift of the basket features (flagged on a shifted mix, not on
new purchases of the same generator), the hit rate against a count by hand, and `kronkers-monitor` reporting both
when new transactions arrive."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, ploomber_env, product_at
from kronkers_ml.core import read_json
from kronkers_ml.monitoring.drift import drift_scores, flag_drift
from kronkers_ml.monitoring.profiles import latest_profile, profile_frame, read_profile
from kronkers_ml.recommendations.family import load_recommendations
from kronkers_ml.recommendations.monitor import hit_rate, monitor_baskets, new_customer_baskets

SPEC = yaml.safe_load((ROOT / "config" / "monitoring.yaml").read_text())["recommendations"]
WATCHED = SPEC["drift"]["columns"]
P_VALUE = float(yaml.safe_load((ROOT / "env.test.yaml").read_text())["monitoring"]["drift_p_value"])


@pytest.fixture(scope="module")
def cutoff(built) -> pd.Timestamp:
    return pd.Timestamp(read_json(product_at(built, "recommendations.hit_rate"))["cutoff"])


@pytest.fixture(scope="module")
def arrived(built, cutoff) -> pd.DataFrame:
    "The clean lines after the model's cut-off: purchases of the same generator that the model and the reference never saw."
    lines = pd.read_parquet(product_at(built, "demand.transactions"))
    return lines[lines["date"] >= cutoff].reset_index(drop=True)


def before_arrival(built: Path, cutoff: pd.Timestamp, tmp_path: Path) -> Path:
    "An out folder with the build's recommendations products and its log up to the cut-off: the purchases after it have not arrived."
    out = tmp_path / "out"
    shutil.copytree(built / "recommendations", out / "recommendations")
    shutil.copytree(product_at(built, "profiles.recommendations.baskets_train"), product_at(out, "profiles.recommendations.baskets_train"))
    shutil.copy(product_at(built, "profiles.recommendations.index"), product_at(out, "profiles.recommendations.index"))
    lines = pd.read_parquet(product_at(built, "demand.transactions"))
    product_at(out, "demand.transactions").parent.mkdir(parents=True)
    lines[lines["date"] < cutoff].to_parquet(product_at(out, "demand.transactions"))
    return out


def drifted_columns(baskets: pd.DataFrame, built: Path) -> list[str]:
    reference = read_profile(latest_profile(built, "recommendations", SPEC["drift"]["reference"]))
    scores = flag_drift(drift_scores(profile_frame(baskets, WATCHED), reference, WATCHED), P_VALUE)
    return list(scores.index[scores["drifted"]])


def test_profiles_and_hit_rate_are_in_the_build(built, cutoff):
    index = json.loads(product_at(built, "profiles.recommendations.index").read_text())
    assert index["reference"]["rows"] > 0 and index["current"]["rows"] > 0
    summary = read_profile(latest_profile(built, "recommendations", "baskets_train")).get_columns()
    assert set(WATCHED) <= set(summary)
    evaluation = read_json(product_at(built, "recommendations.hit_rate"))
    metrics = read_json(product_at(built, "recommendations.metrics"))
    assert evaluation["from"] == metrics["data"]["test_from"] and evaluation["to"] == metrics["data"]["test_to"]
    assert 0 < evaluation["hit_rate"] <= 1 and evaluation["customers"] == metrics["data"]["customers_test"]


def test_basket_drift_flags_a_shifted_mix_and_not_new_purchases_of_the_same_generator(built, cutoff, arrived, tmp_path):
    out = before_arrival(built, cutoff, tmp_path)
    same = monitor_baskets(arrived, out)
    assert len(same) == arrived["invoice_id"].nunique() - arrived.loc[arrived["customer_id"].isna(), "invoice_id"].nunique()
    assert drifted_columns(same, built) == []
    shifted = monitor_baskets(new_customer_baskets(arrived, 0.3, seed=0), out)
    assert "repeat_share" in drifted_columns(shifted, built)


def test_hit_rate_equals_the_count_by_hand(built, arrived):
    model = load_recommendations(built)["model"]
    bought = arrived[arrived["customer_id"].notna()]
    by_hand = 0
    customers = sorted(bought["customer_id"].astype(str).unique())
    for c in customers:
        listed = {i["product_id"] for i in model.recommend(c, 10)["items"]}
        by_hand += bool(listed & set(bought.loc[bought["customer_id"] == c, "product_id"].astype(str)))
    got = hit_rate(model, bought, 10)
    assert (got["customers"], got["customers_hit"]) == (len(customers), by_hand)
    assert got["hit_rate"] == pytest.approx(by_hand / len(customers))
    # a hand-made case: one customer buys their first product, one buys nothing they were offered, one the shop does
    # not know buys the first popular product: 2 of 3
    known = customers[:2]
    first = model.recommend(known[0], 10)["items"][0]["product_id"]
    offered = {i["product_id"] for i in model.recommend(known[1], 10)["items"]}
    other = sorted(set(bought["product_id"].astype(str)) - offered)[0]
    tiny = pd.DataFrame({"customer_id": [known[0], known[1], "never-seen"], "product_id": [first, other, model.popular(10)[0]],
                         "date": pd.to_datetime(["2030-01-01"] * 3)})
    assert hit_rate(model, tiny, 10)["customers_hit"] == 2


def monitor_cli(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kronkers-monitor"), "--env-file", "env.test.yaml", "--out", str(out), "--family",
                           "recommendations", "--no-retrain", *args], cwd=ROOT, env=ploomber_env(), capture_output=True,
                          text=True, timeout=900)


def test_monitor_reports_basket_drift_and_hit_rate_as_purchases_arrive(built, cutoff, arrived, tmp_path):
    out = before_arrival(built, cutoff, tmp_path)
    evaluation = read_json(product_at(built, "recommendations.hit_rate"))
    new = tmp_path / "new.parquet"; arrived.to_parquet(new)
    done = monitor_cli(out, "--current", str(new))
    assert done.returncode == 0, done.stderr
    assert "recommendations: drift ok; performance ok (within limits: hit rate" in done.stdout, done.stdout
    check = read_json(product_at(out, "monitoring.last_check"))["families"]["recommendations"]["performance"]
    assert check["hit_rate"] == pytest.approx(evaluation["hit_rate"]) and check["customers"] == evaluation["customers"]
    prom = product_at(out, "monitoring.gauges").read_text()
    assert f'kronkers_model_window_customers{{family="recommendations"}} {float(evaluation["customers"])}' in prom
    assert 'kronkers_model_window_hit_rate{family="recommendations"}' in prom
    assert 'kronkers_monitor_breach{family="recommendations",kind="drift"} 0.0' in prom
    # the same invoices, but 30% of them by customers never seen before: the baskets drift
    shifted = tmp_path / "shifted.parquet"; new_customer_baskets(arrived, 0.3, seed=0).to_parquet(shifted)
    done = monitor_cli(out, "--current", str(shifted))
    assert done.returncode == 0, done.stderr
    assert "recommendations: drift BREACH repeat_share" in done.stdout, done.stdout
    # customers who stop buying what they used to: each line's product drawn at random from the catalogue
    rng = np.random.default_rng(0)
    products = arrived["product_id"].unique()
    scrambled = tmp_path / "scrambled.parquet"
    arrived.assign(product_id=rng.choice(products, size=len(arrived))).to_parquet(scrambled)
    done = monitor_cli(out, "--current", str(scrambled))
    assert done.returncode == 0, done.stderr
    assert "performance BREACH hit rate" in done.stdout, done.stdout
    alerts = [json.loads(line) for line in product_at(out, "monitoring.alerts").read_text().splitlines()]
    perf = [a for a in alerts if a["kind"] == "performance"]
    assert len(perf) == 1 and perf[0]["name"] == "hit_rate" and perf[0]["value"] < perf[0]["threshold"]
