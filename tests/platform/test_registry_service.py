"""Registry, promotion gate, rollback, access control, audit and the model service on a real socket.

Uses the session's tiny pipeline build (`built`) for data and the trained model, and a fresh MLflow store of its own
(so the build's store is never modified)."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import BIN, ROOT, bomb_png, running_service
from kronkers_ml.products import product_path
from kronkers_ml.platform.access import create_key, load_roles, read_audit
from kronkers_ml.demand.family import demand_heldout, fit_demand_model, log_demand_model, save_demand_model
from kronkers_ml.families import FAMILIES
from kronkers_ml.platform.registry import champion_version, register_and_gate, show_version
from kronkers_ml.returns.family import log_returns_model, returns_heldout
from kronkers_ml.service_time.family import log_service_time_model
from kronkers_ml.returns.model import build_classifier, load_classifier, save_classifier
from kronkers_ml.service_time.features import FEATURES
from kronkers_ml.service_time.model import fit_lightgbm, save_model
from kronkers_ml.platform.tracking import artifact_root, log_training_run, use_store

ROLES = ROOT / "config" / "roles.yaml"


# --- the pipeline's own registration --------------------------------------------------------------------------

def test_pipeline_registers_and_promotes_the_first_version(built):
    reg = json.loads(product_path("service_time.registration", built).read_text())
    metrics = json.loads(product_path("service_time.metrics", built).read_text())
    assert reg["model"] == "service-time" and reg["decision"] == "promoted" and reg["champion_version_after"] == reg["version"]
    assert reg["candidate"] == pytest.approx(metrics["model"]["mae_s"], rel=1e-9)
    db = built / "mlflow" / "mlflow.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)   # read-only: the build's store stays untouched
    try:
        alias = con.execute("select version from registered_model_aliases where name='service-time' and alias='champion'").fetchone()
        tags = dict(con.execute("select key, value from tags where run_uuid=?", (reg["run_id"],)).fetchall())
        params = dict(con.execute("select key, value from params where run_uuid=?", (reg["run_id"],)).fetchall())
    finally:
        con.close()
    assert str(alias[0]) == reg["version"]
    assert tags["data.sha256"] == metrics["data"]["sha256"] and tags["data.rows_test"] == str(metrics["data"]["rows_test"])
    assert "git.commit" in tags and params["seed"] == "7"
    arts = list((built / "mlflow" / "artifacts").rglob("train-service-time.ipynb"))
    assert arts, "the executed training notebook is not among the run's artifacts"


def test_pipeline_registers_the_demand_model_through_the_same_gate(built):
    reg = json.loads(product_path("demand.registration", built).read_text())
    metrics = json.loads(product_path("demand.metrics", built).read_text())
    assert reg["model"] == "demand" and reg["metric"] == "mase" and reg["decision"] == "promoted"
    assert reg["candidate"] == pytest.approx(metrics["model"]["own_mase"], rel=1e-6)
    assert set(reg["baselines"]) == {"seasonal_naive", "moving_average"}
    con = sqlite3.connect(f"file:{built / 'mlflow' / 'mlflow.db'}?mode=ro", uri=True)
    try:
        alias = con.execute("select version from registered_model_aliases where name='demand' and alias='champion'").fetchone()
        tags = dict(con.execute("select key, value from tags where run_uuid=?", (reg["run_id"],)).fetchall())
        params = dict(con.execute("select key, value from params where run_uuid=?", (reg["run_id"],)).fetchall())
        mets = dict(con.execute("select key, value from metrics where run_uuid=?", (reg["run_id"],)).fetchall())
    finally:
        con.close()
    assert str(alias[0]) == reg["version"]
    assert tags["data.sha256"] == metrics["data"]["sha256"] and tags["data.rows"] == str(metrics["data"]["rows"])
    assert tags["family"] == "demand" and "git.commit" in tags and params["seed"] == "7"
    assert params["model"] == metrics["model"]["name"] and mets["mase"] == pytest.approx(metrics["model"]["mase"])
    arts = built / "mlflow" / "artifacts"
    assert list(arts.rglob("backtest-demand.ipynb")) and list(arts.rglob("forecast-demand.ipynb"))
    assert list(arts.rglob("sarima.parquet")) and list(arts.rglob("sarima.json"))


def test_pipeline_registers_the_returns_classifier_through_the_accuracy_gate(built):
    reg = json.loads(product_path("returns.registration", built).read_text())
    metrics = json.loads(product_path("returns.metrics", built).read_text())
    assert reg["model"] == "returns" and reg["metric"] == "accuracy"
    assert reg["candidate"] == pytest.approx(metrics["model"]["accuracy"], abs=1e-12)
    assert reg["baselines"] == {b: pytest.approx(v["accuracy"]) for b, v in metrics["baselines"].items()}
    # higher is better: promoted exactly when above both baselines (the tiny build's 3 short epochs may or may not be)
    beats = reg["candidate"] > max(reg["baselines"].values())
    assert reg["decision"] == ("promoted" if beats else "rejected")
    assert reg["champion_version_after"] == (reg["version"] if beats else None)
    con = sqlite3.connect(f"file:{built / 'mlflow' / 'mlflow.db'}?mode=ro", uri=True)
    try:
        alias = con.execute("select version from registered_model_aliases where name='returns' and alias='champion'").fetchone()
        tags = dict(con.execute("select key, value from tags where run_uuid=?", (reg["run_id"],)).fetchall())
        params = dict(con.execute("select key, value from params where run_uuid=?", (reg["run_id"],)).fetchall())
        vtags = dict(con.execute("select key, value from model_version_tags where name='returns' and version=?",
                                 (int(reg["version"]),)).fetchall())
    finally:
        con.close()
    assert (alias is not None and str(alias[0]) == reg["version"]) == beats and vtags["gate.direction"] == "higher"
    assert tags["data.rows_test"] == str(metrics["test_images"]) and tags["data.rows_train"] == str(metrics["train_images"])
    assert tags["data.sha256"] == reg["data"]["sha256"] and params["data.test_sha256"] == metrics["data"]["test_sha256"]
    assert tags["family"] == "returns" and "git.commit" in tags and params["seed"] == "7"
    arts = built / "mlflow" / "artifacts"
    assert list(arts.rglob("train-returns.ipynb")) and list(arts.rglob("evaluate-returns.ipynb")) and list(arts.rglob("model.pt"))


# --- a registry of our own ---------------------------------------------------------------------------------------

PROBE_THRESHOLD = 0.8


def _linear_probe_classifier(returns_dir: Path, path: Path, image_size: int = 128) -> Path:
    "Save a returns classifier: ImageNet Lite0 features, logistic-regression head fitted on train.npz; its metrics.json beside it."
    import torch
    from sklearn.linear_model import LogisticRegression
    from kronkers_ml.returns.data import read_arrays
    from kronkers_ml.returns.model import to_tensor_batch
    x, y = read_arrays(returns_dir / "train.npz")
    model = build_classifier("efficientnet_lite0", pretrained=True, seed=0).eval()
    head, model._fc = model._fc, torch.nn.Identity()
    with torch.inference_mode():
        features = model(to_tensor_batch(x, image_size)).numpy()
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(features, y)
    model._fc = head
    with torch.no_grad():
        head.weight.copy_(torch.tensor(fit.coef_, dtype=torch.float32)); head.bias.copy_(torch.tensor(fit.intercept_, dtype=torch.float32))
    save_classifier(model, path, image_size=image_size)
    (path.parent / "metrics.json").write_text(json.dumps({"review": {"threshold": PROBE_THRESHOLD}}))
    return path


def _models_cli(ctx: dict, *args: str) -> subprocess.CompletedProcess:
    "Run `kronkers models ARGS` with `ctx`'s options and environment (its `opts`, `cli_env`); it must succeed."
    done = subprocess.run([str(BIN / "kronkers"), "models", *args, *ctx["opts"]],
                          capture_output=True, text=True, env=ctx["cli_env"], timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def env(built, tmp_path_factory):
    "A fresh store with: v1 = a weak model promoted by hand, v2 = the pipeline's model (gated in), v3 = weak (gated out)."
    out = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{out}/mlflow/mlflow.db"
    use_store(uri, "service-time", artifact_root(out))
    metrics = json.loads(product_path("service_time.metrics", built).read_text())
    training = json.loads(product_path("service_time.training", built).read_text())
    features = pd.read_parquet(product_path("service_time.features", built))
    test_from = pd.Timestamp(training["split"]["test"]["from"])
    heldout, history = features[features.date >= test_from], features[features.date < test_from]
    weak = out / "weak.txt"
    save_model(fit_lightgbm(history, training["params"], 2, seed=7), weak)

    def register(model_path):
        run = log_training_run("service-time", {"seed": 7}, metrics,
                               lambda: log_service_time_model(model_path))
        return register_and_gate(uri, FAMILIES["service_time"], run["model_uri"], run["run_id"], metrics, heldout)

    first = register(weak)
    cli_env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    opts = ["--out", str(out), "--roles", str(ROLES), "--state-dir", str(out / "service")]
    cli = {"opts": opts, "cli_env": cli_env}
    _models_cli(cli, "promote", "service-time", first["version"])
    second = register(product_path("service_time.model", built))
    third = register(weak)
    # demand: a random-walk SARIMA promoted by hand, the pipeline's model (gated in), the random walk again (gated out)
    use_store(uri, "demand", artifact_root(out))
    dmetrics = json.loads(product_path("demand.metrics", built).read_text())
    daily = pd.read_parquet(product_path("demand.daily", built))
    dheld = demand_heldout(daily, dmetrics)
    walk = out / "walk" / "sarima.parquet"
    save_demand_model(daily, fit_demand_model(daily, (0, 1, 0), (0, 1, 0, 7))[1], walk)

    def register_demand(model_path):
        run = log_training_run("demand", {"seed": 7}, dmetrics, lambda: log_demand_model(model_path))
        return register_and_gate(uri, FAMILIES["demand"], run["model_uri"], run["run_id"], dmetrics, dheld)

    d1 = register_demand(walk)
    _models_cli(cli, "promote", "demand", d1["version"])
    d2 = register_demand(product_path("demand.sarima", built))
    d3 = register_demand(walk)
    # returns: an untrained classifier promoted by hand, a better one (gated in), the untrained one again (gated out).
    # The better one is ImageNet EfficientNet-Lite0 features with a logistic-regression head fitted on the train split
    # (seconds on a CPU, above both baselines); the tiny build's own 3-epoch model need not be better than them.
    use_store(uri, "returns", artifact_root(out))
    rmetrics = json.loads(product_path("returns.metrics", built).read_text())
    rtraining = json.loads(product_path("returns.training", built).read_text())
    rheld = returns_heldout(product_path("returns.test", built))
    untrained = out / "untrained" / "model.pt"
    save_classifier(build_classifier(rtraining["architecture"], pretrained=False, seed=3), untrained,
                    image_size=rtraining["image_size"])

    def register_returns(model_path):
        run = log_training_run("returns", {"seed": 7}, {**rmetrics, "data": {"rows_train": 1, "rows_test": len(rheld), "sha256": "x"}},
                               lambda: log_returns_model(model_path))
        return register_and_gate(uri, FAMILIES["returns"], run["model_uri"], run["run_id"], rmetrics, rheld)

    r1 = register_returns(untrained)
    _models_cli(cli, "promote", "returns", r1["version"])
    r2 = register_returns(_linear_probe_classifier(built / "returns", out / "probe" / "model.pt"))
    r3 = register_returns(untrained)
    roles = load_roles(ROLES)
    keys = {role: create_key(out / "service" / "keys.json", role, roles, f"test {role}")[1] for role in roles}
    return {"out": out, "uri": uri, "records": [first, second, third], "heldout": heldout, "keys": keys,
            "opts": opts, "cli_env": cli_env, "metrics": metrics, "demand": [d1, d2, d3], "demand_metrics": dmetrics,
            "demand_heldout": dheld, "returns": [r1, r2, r3], "returns_metrics": rmetrics, "returns_heldout": rheld}


def test_gate_lets_a_better_model_in_and_keeps_a_worse_one_out(env):
    first, second, third = env["records"]
    assert first["decision"] == "rejected"                     # the weak model does not beat the baselines
    assert second["decision"] == "promoted" and second["champion_version_before"] == first["version"]
    assert second["candidate"] < second["champion"]             # on the same held-out rows
    assert third["decision"] == "rejected" and third["champion_version_after"] == second["version"]
    assert third["candidate"] > third["champion"]
    tags = show_version(env["uri"], "service-time", third["version"])["tags"]
    assert tags["gate.decision"] == "rejected" and float(tags["gate.champion"]) == pytest.approx(second["candidate"], rel=1e-5)
    assert int(tags["gate.heldout_rows"]) == len(env["heldout"])
    assert {"gate.baseline.business_rule_7min", "gate.baseline.historical_mean", "gate.baseline.customer_mean"} <= set(tags)


def test_demand_gate_keeps_a_worse_model_out_and_lets_a_better_one_in(env):
    d1, d2, d3 = env["demand"]
    assert d2["decision"] == "promoted" and d2["champion_version_before"] == d1["version"]
    assert d2["candidate"] < d2["champion"] == pytest.approx(d1["candidate"])       # same folds, same refits
    assert d2["candidate"] == pytest.approx(env["demand_metrics"]["model"]["own_mase"], rel=1e-6)
    assert d3["decision"] == "rejected" and d3["champion_version_after"] == d2["version"] and d3["candidate"] > d3["champion"]
    tags = show_version(env["uri"], "demand", d3["version"])["tags"]
    assert tags["gate.metric"] == "mase" and tags["gate.direction"] == "lower" and tags["gate.decision"] == "rejected"
    assert int(tags["gate.heldout_rows"]) == len(env["demand_heldout"])
    assert {"gate.baseline.seasonal_naive", "gate.baseline.moving_average"} <= set(tags)
    for cmd in (["list"], ["show", "demand"], ["history", "demand"]):
        done = _models_cli(env, *cmd)
        assert d2["version"] in done.stdout, done.stdout


def test_returns_gate_keeps_an_untrained_model_out_and_lets_the_trained_one_in(env):
    r1, r2, r3 = env["returns"]
    # higher is better: the untrained classifier (about one in five right) is below the baselines
    assert r1["decision"] == "rejected" and r1["candidate"] <= max(r1["baselines"].values())
    assert r2["decision"] == "promoted" and r2["champion_version_before"] == r1["version"]
    assert r2["candidate"] > r2["champion"] == pytest.approx(r1["candidate"])          # the same held-out images
    assert r2["candidate"] > max(r2["baselines"].values())
    assert r3["decision"] == "rejected" and r3["champion_version_after"] == r2["version"] and r3["candidate"] < r3["champion"]
    assert "baseline" in r3["reason"]
    tags = show_version(env["uri"], "returns", r3["version"])["tags"]
    assert tags["gate.metric"] == "accuracy" and tags["gate.direction"] == "higher" and tags["gate.decision"] == "rejected"
    assert int(tags["gate.heldout_rows"]) == len(env["returns_heldout"])
    assert {"gate.baseline.majority", "gate.baseline.linear"} <= set(tags)
    for cmd in (["list"], ["show", "returns"], ["history", "returns"]):
        done = _models_cli(env, *cmd)
        assert r2["version"] in done.stdout, done.stdout


def test_cli_shows_history_and_audits_the_manual_promotion(env):
    done = _models_cli(env, "history", "service-time")
    assert "promoted" in done.stdout and "rejected" in done.stdout and "champion stack" in done.stdout
    audit = read_audit(env["out"] / "service" / "audit.jsonl")
    row = audit[audit.action == "promote"].iloc[0]
    assert row.model == "service-time" and row.version == env["records"][0]["version"] and row.status == 200
    for sub in (["models", "--help"], ["keys", "--help"], ["serve", "--help"], ["models", "rollback", "--help"]):
        assert subprocess.run([str(BIN / "kronkers"), *sub], capture_output=True, timeout=60).returncode == 0


# --- the service on a real socket --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(env):
    args = ["--max-rows", "50", "--max-body-bytes", "200000", "--max-images", "8", "--max-image-bytes", "100000",
            "--models", "service-time,demand,returns", *env["opts"]]   # the families this store registers
    with running_service(args, env["out"] / "service.log", env["cli_env"]) as client:
        yield {"client": client, **env}


def _rows(heldout: pd.DataFrame, n: int) -> list[dict]:
    part = heldout.head(n)
    rows = part[FEATURES].astype(object).where(part[FEATURES].notna(), None).to_dict("records")
    for r, sid in zip(rows, part.stop_id): r["zone"] = str(r["zone"]); r["stop_id"] = str(sid)
    return rows


def _csv(heldout: pd.DataFrame, n: int) -> bytes:
    return heldout.head(n)[["stop_id", *FEATURES]].to_csv(index=False).encode()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _photos(held, n: int, start: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    "Multipart file parts for httpx: n held-out images as PNG files named return_<index>.png."
    return [("files", (f"return_{i:05d}.png", _png(held.images[i]), "image/png")) for i in range(start, start + n)]


def test_service_answers_on_a_socket_with_the_champion(service, built):
    c, keys = service["client"], service["keys"]
    assert c.get("/health").json() == {"status": "ok"}
    ready = c.get("/ready").json()
    assert ready["ready"] and ready["models"]["service-time"] == service["records"][1]["version"]
    assert ready["models"]["demand"] == service["demand"][1]["version"]
    r = c.post("/v1/models/service-time/predict", json={"stops": _rows(service["heldout"], 5)}, headers={"X-API-Key": keys["operations"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == service["records"][1]["version"] and len(body["predictions"]) == 5
    from kronkers_ml.service_time.model import load_model, predict_lightgbm
    expect = predict_lightgbm(load_model(product_path("service_time.model", built)), service["heldout"].head(5))
    assert np.allclose([p["service_time_s"] for p in body["predictions"]], expect)
    r = c.post("/v1/models/service-time/predict.csv", content=_csv(service["heldout"], 7),
               headers={"X-API-Key": keys["operations"], "Content-Type": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    out = pd.read_csv(io.StringIO(r.text))
    assert out.columns.tolist() == ["stop_id", "service_time_s"] and len(out) == 7
    assert np.allclose(out.service_time_s[:5], expect)
    metrics = c.get("/metrics").text
    assert 'kronkers_requests_total{endpoint="/v1/models/service-time/predict",model="service-time",status="200"}' in metrics
    assert "kronkers_request_latency_seconds_bucket" in metrics
    assert c.get("/openapi.json").json()["paths"]["/v1/models/service-time/predict"]


def test_demand_forecast_matches_the_pipeline_and_names_a_bad_horizon(service, built):
    c, key = service["client"], service["keys"]["procurement"]
    r = c.get("/v1/models/demand/forecast", params={"horizon": 10}, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == service["demand"][1]["version"] and body["model"] == "demand" and body["horizon"] == 10
    fc = pd.DataFrame(body["forecast"])
    assert fc.columns.tolist() == ["date", "forecast", "lo80", "hi80", "lo95", "hi95"] and len(fc) == 10
    expect = pd.read_parquet(product_path("demand.forecast", built)).head(10)   # forecast-demand, same fit
    assert fc.date.tolist() == expect.date.dt.strftime("%Y-%m-%d").tolist()
    for col in ("forecast", "lo80", "hi80", "lo95", "hi95"):
        assert np.allclose(fc[col], expect[col], atol=0.01), col
    assert ((fc.lo95 <= fc.lo80) & (fc.lo80 <= fc.forecast) & (fc.forecast <= fc.hi80) & (fc.hi80 <= fc.hi95)).all()
    for bad in ("0", "-3", "2.5", "abc", "91", None):
        r = c.get("/v1/models/demand/forecast", params={} if bad is None else {"horizon": bad}, headers={"X-API-Key": key})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "horizon", (bad, r.text)
    assert c.get("/health").status_code == 200
    metrics = c.get("/metrics").text
    assert 'kronkers_requests_total{endpoint="/v1/models/demand/forecast",model="demand",status="200"}' in metrics
    assert 'kronkers_request_errors_total{endpoint="/v1/models/demand/forecast",model="demand",status="422"}' in metrics
    audit = read_audit(service["out"] / "service" / "audit.jsonl")
    line = audit[audit.endpoint == "GET /v1/models/demand/forecast"].iloc[-1]
    assert line.model == "demand" and line.role == "procurement" and line.status == 422


# who may call what: role -> endpoint -> expected status
ENDPOINTS = {
    "list": ("GET", "/v1/models"),
    "versions": ("GET", "/v1/models/service-time"),
    "predict": ("POST", "/v1/models/service-time/predict"),
    "predict_csv": ("POST", "/v1/models/service-time/predict.csv"),
    "demand_versions": ("GET", "/v1/models/demand"),
    "forecast": ("GET", "/v1/models/demand/forecast?horizon=3"),
    "returns_versions": ("GET", "/v1/models/returns"),
    "classify": ("POST", "/v1/models/returns/classify"),
    "reload": ("POST", "/v1/admin/reload"),
}
EXPECTED = {
    None:          {e: 401 for e in ENDPOINTS},
    "bad":         {e: 401 for e in ENDPOINTS},
    "operations":  {"list": 200, "versions": 200, "predict": 200, "predict_csv": 200, "demand_versions": 403, "forecast": 403,
                    "returns_versions": 200, "classify": 200, "reload": 403},
    "marketing":   {"list": 200, "versions": 403, "predict": 403, "predict_csv": 403, "demand_versions": 200, "forecast": 200,
                    "returns_versions": 403, "classify": 403, "reload": 403},
    "procurement": {"list": 200, "versions": 403, "predict": 403, "predict_csv": 403, "demand_versions": 200, "forecast": 200,
                    "returns_versions": 403, "classify": 403, "reload": 403},
    "admin":       {e: 200 for e in ENDPOINTS},
    "deployer":    {e: 200 if e == "reload" else 403 for e in ENDPOINTS},
}


def _call(c: httpx.Client, endpoint: str, key: str | None, heldout: pd.DataFrame, rid: str, photos=None) -> httpx.Response:
    method, path = ENDPOINTS[endpoint]
    headers = {"X-Request-ID": rid, **({"X-API-Key": key} if key else {})}
    if endpoint == "classify": return c.post(path, files=photos, headers=headers)
    if endpoint == "predict": return c.post(path, json={"stops": _rows(heldout, 2)}, headers=headers)
    if endpoint == "predict_csv": return c.post(path, content=_csv(heldout, 2), headers={**headers, "Content-Type": "text/csv"})
    return c.request(method, path, headers=headers)


def test_role_by_endpoint_matrix_and_an_audit_line_for_every_call(service):
    c, keys, audit_path = service["client"], service["keys"], service["out"] / "service" / "audit.jsonl"
    assert set(EXPECTED) - {None, "bad"} == set(load_roles(ROLES)), "the matrix must cover every role in config/roles.yaml"
    before = len(read_audit(audit_path))
    sent = {}
    for role, expected in EXPECTED.items():
        key = {None: None, "bad": "kk_000000000000_not-a-real-key"}.get(role, keys.get(role))
        for endpoint, status in expected.items():
            rid = uuid.uuid4().hex
            r = _call(c, endpoint, key, service["heldout"], rid, _photos(service["returns_heldout"], 2))
            assert r.status_code == status, f"{role} {endpoint}: {r.status_code} {r.text[:300]}"
            if role in (None, "bad"):                     # an unauthenticated caller's id is not taken: ours is sent back
                assert r.headers["x-request-id"] != rid
                rid = r.headers["x-request-id"]
            assert r.headers["x-request-id"] == rid
            sent[rid] = (role, endpoint, status)
    audit = read_audit(audit_path).iloc[before:]
    assert len(audit) == len(sent), "one audit line per call"
    by_id = audit.set_index("request_id")
    for rid, (role, endpoint, status) in sent.items():
        line = by_id.loc[rid]
        assert line.status == status and line.role == (role if role not in (None, "bad") else None)
        assert line.latency_ms >= 0 and line.endpoint.startswith(ENDPOINTS[endpoint][0])
        if status == 200 and endpoint.startswith("predict"):
            assert line.model == "service-time" and line.version == service["records"][1]["version"]
        if status == 200 and endpoint == "classify":
            assert line.model == "returns" and line.version == service["returns"][1]["version"] and line.action == "predict"
        if status == 200 and endpoint == "forecast":
            assert line.model == "demand" and line.version == service["demand"][1]["version"] and line.action == "predict"
    raw = audit_path.read_text()
    assert "cust_hist_mean" not in raw and "weight_kg" not in raw, "payloads must not reach the audit log"
    assert "return_00000.png" not in raw, "uploaded file names must not reach the audit log"
    for k in keys.values(): assert k.split("_", 2)[2] not in raw


def test_revoked_key_is_refused_at_once(service):
    c, out = service["client"], service["out"]
    env = service["cli_env"]
    created = subprocess.run([str(BIN / "kronkers"), "keys", "create", "--role", "operations", *service["opts"]],
                             capture_output=True, text=True, env=env, timeout=60)
    key_id = created.stdout.split("key id: ")[1].split()[0]
    key = created.stdout.split("key:    ")[1].split()[0]
    assert c.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    assert key not in (out / "service" / "keys.json").read_text()
    subprocess.run([str(BIN / "kronkers"), "keys", "revoke", key_id, *service["opts"]], check=True, env=env, timeout=60,
                   capture_output=True)
    assert c.get("/v1/models", headers={"X-API-Key": key}).status_code == 401


@pytest.mark.parametrize("case", ["missing_field", "wrong_type", "unknown_field", "bad_zone", "negative", "empty", "too_many",
                                  "not_json", "csv_malformed", "csv_not_utf8", "csv_missing_column", "csv_bad_value",
                                  "csv_too_large", "csv_empty"])
def test_bad_payloads_give_a_clear_4xx_and_the_service_stays_up(service, case):
    c, key, held = service["client"], service["keys"]["operations"], service["heldout"]
    row = _rows(held, 1)[0]
    J, C = "/v1/models/service-time/predict", "/v1/models/service-time/predict.csv"
    h, hc = {"X-API-Key": key}, {"X-API-Key": key, "Content-Type": "text/csv"}
    good_csv = _csv(held, 3).decode()
    calls = {
        "missing_field": (lambda: c.post(J, json={"stops": [{k: v for k, v in row.items() if k != "n_items"}]}, headers=h), 422, "n_items"),
        "wrong_type": (lambda: c.post(J, json={"stops": [{**row, "weight_kg": "heavy"}]}, headers=h), 422, "weight_kg"),
        "unknown_field": (lambda: c.post(J, json={"stops": [{**row, "n_itmes": 3}]}, headers=h), 422, "n_itmes"),
        "bad_zone": (lambda: c.post(J, json={"stops": [{**row, "zone": "mars"}]}, headers=h), 422, "zone"),
        "negative": (lambda: c.post(J, json={"stops": [{**row, "n_boxes": -2}]}, headers=h), 422, "n_boxes"),
        "empty": (lambda: c.post(J, json={"stops": []}, headers=h), 422, "stops"),
        "too_many": (lambda: c.post(J, json={"stops": [row] * 51}, headers=h), 422, "stops"),
        "not_json": (lambda: c.post(J, content=b"{not json", headers={**h, "Content-Type": "application/json"}), 422, "JSON"),
        "csv_malformed": (lambda: c.post(C, content=b'stop_id,hour\n"1,2\n', headers=hc), 400, "malformed CSV"),
        "csv_not_utf8": (lambda: c.post(C, content=b"\xff\xfe\xfa\x00", headers=hc), 400, "UTF-8"),
        "csv_missing_column": (lambda: c.post(C, content=good_csv.replace("n_items", "items").encode(), headers=hc), 422, "n_items"),
        "csv_bad_value": (lambda: c.post(C, content=(good_csv.split("\n")[0] + "\n" + ",".join(
            ["x" if col == "weight_kg" else v for col, v in zip(good_csv.split("\n")[0].split(","), good_csv.split("\n")[1].split(","))])
            + "\n").encode(), headers=hc), 422, "weight_kg"),
        "csv_too_large": (lambda: c.post(C, content=good_csv.encode() + b"x" * 300_000, headers=hc), 413, "limit"),
        "csv_empty": (lambda: c.post(C, content=b"", headers=hc), 400, "CSV"),
    }
    call, status, word = calls[case]
    r = call()
    assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
    assert word.lower() in r.text.lower(), f"{case}: {r.text[:300]}"
    assert c.get("/health").status_code == 200


def _promote_and_reload(service: dict, name: str, version: str) -> None:
    "Make `version` the champion of `name` again and check that a reload serves it."
    _models_cli(service, "promote", name, version)
    r = service["client"].post("/v1/admin/reload", headers={"X-API-Key": service["keys"]["admin"]})
    assert r.json()["models"][name]["to"] == version


def test_rollback_restores_the_previous_version_and_serving_follows_after_reload(service):
    c, admin = service["client"], service["keys"]["admin"]
    first, second, _ = service["records"]
    _models_cli(service, "rollback", "service-time")
    assert champion_version(service["uri"], "service-time") == first["version"]
    assert c.get("/ready").json()["models"]["service-time"] == second["version"]      # not before the reload
    r = c.post("/v1/admin/reload", headers={"X-API-Key": admin})
    assert r.status_code == 200 and r.json()["models"]["service-time"] == {"from": second["version"], "to": first["version"]}
    p = c.post("/v1/models/service-time/predict", json={"stops": _rows(service["heldout"], 3)}, headers={"X-API-Key": admin}).json()
    assert p["version"] == first["version"]
    audit = read_audit(service["out"] / "service" / "audit.jsonl")
    assert (audit.action == "rollback").any() and (audit.action == "reload").any()
    # promote the better version again for the tests that follow
    _promote_and_reload(service, "service-time", second["version"])


def test_demand_rollback_then_reload_serves_the_previous_version(service):
    c, admin, proc = service["client"], service["keys"]["admin"], service["keys"]["procurement"]
    d1, d2, _ = service["demand"]
    _models_cli(service, "rollback", "demand")
    assert champion_version(service["uri"], "demand") == d1["version"]
    r = c.post("/v1/admin/reload", headers={"X-API-Key": admin})
    assert r.status_code == 200 and r.json()["models"]["demand"] == {"from": d2["version"], "to": d1["version"]}
    body = c.get("/v1/models/demand/forecast?horizon=5", headers={"X-API-Key": proc}).json()
    assert body["version"] == d1["version"]
    assert c.get("/v1/models/demand", headers={"X-API-Key": proc}).json()["serves"]["fitted"]["order"] == [0, 1, 0]
    _promote_and_reload(service, "demand", d2["version"])


def test_reload_under_concurrent_requests_loses_none(service):
    c, ops, admin = service["client"], service["keys"]["operations"], service["keys"]["admin"]
    first, second, _ = service["records"]
    base = str(c.base_url)
    body = {"stops": _rows(service["heldout"], 1)}
    results, stop = [], threading.Event()

    def worker():
        with httpx.Client(base_url=base, timeout=30) as wc:
            for _ in range(400):                               # bounded
                if stop.is_set(): break
                try:
                    r = wc.post("/v1/models/service-time/predict", json=body, headers={"X-API-Key": ops})
                    results.append((r.status_code, r.json().get("version")))
                except httpx.HTTPError as e:
                    results.append((type(e).__name__, None))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads: t.start()
    versions = []
    try:
        for target in (first["version"], second["version"], first["version"], second["version"]):
            _models_cli(service, "promote", "service-time", target)
            r = c.post("/v1/admin/reload", headers={"X-API-Key": admin})
            assert r.status_code == 200, r.text
            versions.append(r.json()["models"]["service-time"]["to"])
    finally:
        stop.set()
        for t in threads: t.join(timeout=120)
    assert versions == [first["version"], second["version"], first["version"], second["version"]]
    failed = [r for r in results if r[0] != 200]
    assert results and not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert {v for _, v in results} <= {first["version"], second["version"]}


# --- the returns classifier on the socket -------------------------------------------------------------------------

def test_returns_classify_answers_per_file_like_the_classifier(service, built):
    c, key, held = service["client"], service["keys"]["operations"], service["returns_heldout"]
    r = c.post("/v1/models/returns/classify", files=_photos(held, 5), headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    body = r.json()
    metrics = service["returns_metrics"]
    assert body["model"] == "returns" and body["version"] == service["returns"][1]["version"]
    probe = load_classifier(service["out"] / "probe" / "model.pt", device="cpu")
    assert body["classifier_version"] == probe.version
    assert body["review_threshold"] == PROBE_THRESHOLD                       # the served version's own threshold
    assert [x["file"] for x in body["results"]] == [f"return_{i:05d}.png" for i in range(5)]
    from PIL import Image
    names, conf = probe.predict([Image.fromarray(held.images[i]) for i in range(5)])
    assert [x["category"] for x in body["results"]] == names
    assert np.allclose([x["confidence"] for x in body["results"]], conf, atol=1e-5)
    assert [x["needs_review"] for x in body["results"]] == [bool(v < body["review_threshold"]) for v in conf]
    served = c.get("/v1/models/returns", headers={"X-API-Key": key}).json()
    assert served["served_version"] == body["version"] and served["serves"]["categories"] == metrics["classes"]
    m = c.get("/metrics").text
    assert 'kronkers_requests_total{endpoint="/v1/models/returns/classify",model="returns",status="200"}' in m
    assert 'kronkers_predictions_total{model="returns"}' in m


@pytest.mark.parametrize("case", ["truncated", "not_an_image", "empty_file", "one_bad_of_three", "too_many", "too_big",
                                  "not_multipart", "no_file_part"])
def test_returns_bad_uploads_give_a_4xx_naming_the_file(service, case):
    c, key, held = service["client"], service["keys"]["operations"], service["returns_heldout"]
    h, good = {"X-API-Key": key}, _photos(held, 1)[0]
    png = _png(held.images[0])
    U = "/v1/models/returns/classify"
    calls = {
        "truncated": (lambda: c.post(U, files=[("files", ("cut.png", png[: len(png) // 2], "image/png"))], headers=h), 422, "cut.png"),
        "not_an_image": (lambda: c.post(U, files=[("files", ("notes.txt", b"hello, not a photo", "text/plain"))], headers=h), 422, "notes.txt"),
        "empty_file": (lambda: c.post(U, files=[("files", ("empty.jpg", b"", "image/jpeg"))], headers=h), 422, "empty.jpg"),
        "one_bad_of_three": (lambda: c.post(U, files=[good, ("files", ("bad.jpg", b"\xff\xd8\xff\xe0garbage", "image/jpeg")), good],
                                             headers=h), 422, "bad.jpg"),
        "too_many": (lambda: c.post(U, files=_photos(held, 9), headers=h), 413, "at most 8"),
        "too_big": (lambda: c.post(U, files=[("files", ("huge.png", png + b"\0" * 100_000, "image/png"))], headers=h), 413, "huge.png"),
        "not_multipart": (lambda: c.post(U, content=png, headers={**h, "Content-Type": "image/png"}), 415, "multipart"),
        "no_file_part": (lambda: c.post(U, data={"note": "x"}, files=[], headers=h), 415, "multipart"),
    }
    call, status, word = calls[case]
    r = call()
    assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
    assert word.lower() in r.json()["detail"].lower(), f"{case}: {r.text[:300]}"
    assert c.get("/health").status_code == 200


def test_returns_rollback_then_reload_serves_the_previous_version(service):
    c, admin, ops = service["client"], service["keys"]["admin"], service["keys"]["operations"]
    r1, r2, _ = service["returns"]
    _models_cli(service, "rollback", "returns")
    assert champion_version(service["uri"], "returns") == r1["version"]
    r = c.post("/v1/admin/reload", headers={"X-API-Key": admin})
    assert r.status_code == 200 and r.json()["models"]["returns"] == {"from": r2["version"], "to": r1["version"]}
    body = c.post("/v1/models/returns/classify", files=_photos(service["returns_heldout"], 2), headers={"X-API-Key": ops}).json()
    assert body["version"] == r1["version"] and body["review_threshold"] == 0.9     # no metrics.json logged: the setting
    _models_cli(service, "promote", "returns", r2["version"])
    assert c.post("/v1/admin/reload", headers={"X-API-Key": admin}).json()["models"]["returns"]["to"] == r2["version"]


# --- the service's edges, on a store of its own (no pipeline build needed) ------------------------------------------
# A service-time booster fitted on a few random rows and an untrained returns classifier, each registered and promoted
# by hand: what these tests check (limits, authentication order, schema, request ids, docs) does not depend on how
# good the models are.

@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    import lightgbm as lgb
    from kronkers_ml.service_time.data import ZONES
    from kronkers_ml.platform.registry import register_version, set_champion
    out = tmp_path_factory.mktemp("edge")
    uri = f"sqlite:///{out}/mlflow/mlflow.db"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"n_items": rng.integers(1, 20, 200).astype(float),
                          "zone": pd.Categorical(rng.choice(list(ZONES), 200), categories=list(ZONES))})
    booster = lgb.train({"objective": "l2", "verbose": -1, "seed": 0, "min_data_in_leaf": 5},
                        lgb.Dataset(frame, 100 + 10 * frame.n_items), 10)
    (out / "st").mkdir()
    save_model(booster, out / "st" / "model.txt")
    classifier = out / "ret" / "model.pt"
    classifier.parent.mkdir()
    save_classifier(build_classifier("efficientnet_lite0", pretrained=False, seed=1), classifier, image_size=32)
    data = {"rows_train": 1, "rows_test": 1, "sha256": "x"}
    for experiment, name, metric, log in (("service-time", "service-time", "mae_s", lambda: log_service_time_model(out / "st" / "model.txt")),
                                          ("returns", "returns", "accuracy", lambda: log_returns_model(classifier))):
        use_store(uri, experiment, artifact_root(out))
        run = log_training_run(experiment, {"seed": 0}, {"family": name, "primary_metric": metric, "model": {metric: 1.0},
                                                         "baselines": {}, "data": data}, log)
        set_champion(uri, name, register_version(uri, name, run["model_uri"], run["run_id"]), "test", "edge cases")
    roles = load_roles(ROLES)
    keys = {role: create_key(out / "service" / "keys.json", role, roles, f"test {role}")[1] for role in ("operations", "marketing", "admin")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    args = ["--out", str(out), "--roles", str(ROLES), "--models", "service-time,returns", "--max-body-bytes", "200000",
            "--state-dir", str(out / "service")]
    with running_service(args, out / "service.log", env, timeout_s=600) as client:   # a busy machine loads slowly
        yield {"client": client, "out": out, "keys": keys, "log": out / "service.log",
               "row": {f: (ZONES[0] if f == "zone" else 1.0) for f in FEATURES}}


def _raw(client: httpx.Client, head: str, body: bytes = b"", timeout: float = 60) -> tuple[int, bytes]:
    "Send a request head (and part of a body) on a raw socket, then read the answer without sending the rest."
    import socket
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.find(b"\r\n\r\n") + 4 + int(
                next((l.split(b":")[1] for l in answer.split(b"\r\n") if l.lower().startswith(b"content-length:")), b"0")):
            got = s.recv(65536)
            if not got: break
            answer += got
    return int(answer.split(b" ", 2)[1]), answer.split(b"\r\n\r\n", 1)[1]


def test_serve_prints_where_it_listens_and_no_third_party_warnings(edge):
    log = edge["log"].read_text()
    port = edge["client"].base_url.port
    assert f"Kronkers model service listening on http://127.0.0.1:{port} (models: service-time 1, returns 1)" in log, log
    assert "warning" not in log.lower() and "INFO" not in log, log


def test_models_cli_shows_no_third_party_warnings(edge):
    state = ["--state-dir", str(edge["out"] / "service")]        # the edge service's keys: no note about another place
    done = subprocess.run([str(BIN / "kronkers"), "models", "list", "--out", str(edge["out"]), *state], capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{edge['out']}/mlflow/mlflow.db"}, timeout=300)
    assert done.returncode == 0 and "service-time" in done.stdout, done.stderr
    assert done.stderr == "", done.stderr
    bad = subprocess.run([str(BIN / "kronkers"), "models", "show", "nosuchmodel", "--out", str(edge["out"]), *state],
                         capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{edge['out']}/mlflow/mlflow.db"},
                         timeout=300)
    assert bad.returncode == 2 and "kronkers: error:" in bad.stderr and "nosuchmodel" in bad.stderr   # errors still show


def test_the_key_is_checked_before_the_body_is_read(edge):
    c = edge["client"]
    path = "/v1/models/service-time/predict"
    # 300 MB announced, 1 KB sent: the answer comes without the rest of the body
    for key_header in ("", "X-API-Key: kk_000000000000_not-a-real-key\n"):
        status, body = _raw(c, f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n{key_header}"
                               f"Content-Length: 300000000\n", b"{" * 1024)
        assert status == 401 and b"valid API key" in body, (status, body)
    # malformed JSON with an invalid key: 401, not 400/422
    r = c.post(path, content=b"{not json", headers={"Content-Type": "application/json", "X-API-Key": "kk_bad"})
    assert r.status_code == 401, r.text
    assert c.post(path, content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 401
    assert c.get("/health").status_code == 200


def test_body_limits_are_enforced_while_reading(edge):
    c, key = edge["client"], edge["keys"]["operations"]
    path = "/v1/models/service-time/predict"
    # announced over the limit: 413 at once
    status, body = _raw(c, f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\nX-API-Key: {key}\n"
                           "Content-Length: 43000000\n", b"{")
    assert status == 413 and b"over the limit of 200,000 bytes" in body, (status, body)
    # a real 43 MB JSON body with a key: 413 as documented, not a validation error
    big = json.dumps({"stops": [edge["row"]] * 60_000}).encode()
    assert len(big) > 40_000_000
    r = c.post(path, content=big, headers={"Content-Type": "application/json", "X-API-Key": key})
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text[:300]
    # no length announced (chunked): refused once the bytes received pass the limit
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))     # 256 KB sent, the end never
    status, answer = _raw(c, f"POST {path}.csv HTTP/1.1\nHost: x\nContent-Type: text/csv\nX-API-Key: {key}\n"
                             "Transfer-Encoding: chunked\n", body)
    assert status == 413 and b"body is over the limit of 200,000 bytes" in answer, (status, answer)
    assert c.get("/health").status_code == 200


def test_json_booleans_are_not_numbers(edge):
    c, key = edge["client"], edge["keys"]["operations"]
    path = "/v1/models/service-time/predict"
    ok = c.post(path, json={"stops": [edge["row"]]}, headers={"X-API-Key": key})
    assert ok.status_code == 200, ok.text
    r = c.post(path, json={"stops": [{**edge["row"], "hour": True}]}, headers={"X-API-Key": key})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "stops[0].hour", r.text
    r = c.post(path, json={"stops": [{**edge["row"], "stop_id": False}]}, headers={"X-API-Key": key})
    assert r.status_code == 422 and "stop_id" in r.json()["detail"], r.text


def test_a_decompression_bomb_upload_is_refused_before_decoding(edge):
    c, key = edge["client"], edge["keys"]["operations"]
    bomb = bomb_png()
    assert len(bomb) < 1_000_000
    r = c.post("/v1/models/returns/classify", files=[("files", ("bomb.png", bomb, "image/png"))], headers={"X-API-Key": key})
    assert r.status_code == 413, r.text
    assert r.json()["detail"].startswith("file 'bomb.png': PNG of 12000x12000 = 144,000,000 pixels is over the limit"), r.text
    good = _png(np.full((28, 28), 128, dtype=np.uint8))
    r = c.post("/v1/models/returns/classify", files=[("files", ("ok.png", good, "image/png"))], headers={"X-API-Key": key},
               timeout=600)                                       # the first photo the model sees, on a busy machine
    assert r.status_code == 200 and r.json()["results"][0]["file"] == "ok.png", r.text


def test_the_published_schema_matches_the_errors_sent(edge):
    c, ops, mkt = edge["client"], edge["keys"]["operations"], edge["keys"]["marketing"]
    spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["ValidationErrors"]["properties"]["detail"]["type"] == "string" and "HTTPValidationError" not in schemas
    P, C, R = "/v1/models/service-time/predict", "/v1/models/service-time/predict.csv", "/v1/models/returns/classify"
    sent = [
        ("post", P, c.post(P, json={"stops": [edge["row"]]})),                                            # 401
        ("post", P, c.post(P, json={"stops": [edge["row"]]}, headers={"X-API-Key": mkt})),              # 403
        ("post", P, c.post(P, json={"stops": [{**edge["row"], "hour": True}]}, headers={"X-API-Key": ops})),   # 422
        ("post", C, c.post(C, content=b"\xff\xfe", headers={"X-API-Key": ops, "Content-Type": "text/csv"})),  # 400
        ("post", C, c.post(C, content=b"x" * 300_000, headers={"X-API-Key": ops, "Content-Type": "text/csv"})),  # 413
        ("post", R, c.post(R, content=b"png", headers={"X-API-Key": ops, "Content-Type": "image/png"})),    # 415
        ("get", "/v1/models/{model}", c.get("/v1/models/nosuch", headers={"X-API-Key": edge["keys"]["admin"]})),  # 404
    ]
    assert sorted(r.status_code for *_, r in sent) == [400, 401, 403, 404, 413, 415, 422]
    for method, path, r in sent:
        documented = spec["paths"][path][method]["responses"]
        assert str(r.status_code) in documented, (path, r.status_code, sorted(documented))
        ref = documented[str(r.status_code)]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        body, schema = r.json(), schemas[ref]
        assert set(schema["required"]) <= set(body) and isinstance(body["detail"], str), (path, body)
        if r.status_code == 422:
            assert body["errors"] and all(set(e) == {"field", "message"} for e in body["errors"])


def test_request_ids_are_sanitised_and_never_taken_from_an_unauthenticated_caller(edge):
    import re
    c, key = edge["client"], edge["keys"]["operations"]
    audit_path = edge["out"] / "service" / "audit.jsonl"
    good = "order-2026.12.01_a1"
    r = c.get("/v1/models", headers={"X-API-Key": key, "X-Request-ID": good})
    assert r.status_code == 200 and r.headers["x-request-id"] == good
    for bad in ("x" * 65, "a b", "evil\",\"role\":\"admin", "semi;colon", "x" * 5000):
        r = c.get("/v1/models", headers={"X-API-Key": key, "X-Request-ID": bad})
        assert r.status_code == 200 and r.headers["x-request-id"] != bad and re.fullmatch("[0-9a-f]{32}", r.headers["x-request-id"])
        assert bad not in audit_path.read_text()
    forged = "forged-by-anonymous-0001"
    r = c.get("/v1/models", headers={"X-Request-ID": forged})
    assert r.status_code == 401 and r.headers["x-request-id"] != forged
    audit = read_audit(audit_path)
    assert good in set(audit.request_id) and forged not in audit_path.read_text()
    assert r.headers["x-request-id"] in set(audit.request_id)


def test_docs_work_offline_from_the_service_itself(edge):
    import re
    c = edge["client"]
    page = c.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text, "the page must not load anything from elsewhere"
    refs = set(re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)) | set(re.findall(r"""url: *["']([^"']+)["']""", page.text))
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"} <= refs, refs
    for ref in refs:
        assert ref.startswith("/"), ref
        got = c.get(ref)
        assert got.status_code == 200 and len(got.content) > 0, (ref, got.status_code)
    assert len(c.get("/docs/assets/swagger-ui-bundle.js").content) > 500_000
