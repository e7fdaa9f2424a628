"""GET /v1/operations/plan on a real socket: the service serves the tiny build's champions and its operations plan."""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import ROOT, running_service, product_at
from kronkers_ml.platform.access import create_key, load_roles, read_audit

ROLES = ROOT / "config" / "roles.yaml"
PLAN = "/v1/operations/plan"
# role -> status of GET /v1/operations/plan; None: no key, "bad": a key that was never issued
EXPECTED = {"operations": 200, "admin": 200, "marketing": 403, "procurement": 403, "deployer": 403, None: 401, "bad": 401}


@contextmanager
def serve(built: Path, state: Path, outputs: Path):
    "`kronkers serve` on the tiny build's registry, keys and audit log under `state`, the plan read from `outputs`."
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # the plan needs no model: serve the two families the tiny build promotes (its returns model stays out)
    args = ["--out", str(built), "--outputs", str(outputs), "--models", "service-time,demand", "--roles", str(ROLES),
            "--keys", str(state / "keys.json"), "--audit-log", str(state / "audit.jsonl")]
    with running_service(args, state / f"service-{uuid.uuid4().hex[:8]}.log", env) as client:
        yield client


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ops-service")
    roles = load_roles(ROLES)
    keys = {role: create_key(folder / "keys.json", role, roles, f"test {role}")[1] for role in roles}
    return {"folder": folder, "keys": keys}


@pytest.fixture(scope="module")
def client(built, state):
    with serve(built, state["folder"], built) as c:
        yield c


def _get(c: httpx.Client, key: str | None, params: dict | None = None, rid: str | None = None) -> httpx.Response:
    headers = {"X-Request-ID": rid or uuid.uuid4().hex, **({"X-API-Key": key} if key else {})}
    return c.get(PLAN, params=params, headers=headers)


def test_roles_may_read_the_plan_and_every_call_is_audited(client, state):
    assert set(EXPECTED) - {None, "bad"} == set(load_roles(ROLES)), "the matrix must cover every role in config/roles.yaml"
    audit_path = state["folder"] / "audit.jsonl"
    before = len(read_audit(audit_path)) if audit_path.exists() else 0
    sent = {}
    for role, status in EXPECTED.items():
        key = {None: None, "bad": "kk_000000000000_not-a-real-key"}.get(role, state["keys"].get(role))
        rid = uuid.uuid4().hex
        r = _get(client, key, rid=rid)
        assert r.status_code == status, f"{role}: {r.status_code} {r.text[:300]}"
        if role in (None, "bad"):      # an unauthenticated caller's id is not taken: the service names the call itself
            assert r.headers["x-request-id"] != rid
            rid = r.headers["x-request-id"]
        else:
            assert r.headers["x-request-id"] == rid
        sent[rid] = (role, status)
    audit = read_audit(audit_path).iloc[before:].set_index("request_id")
    assert len(audit) == len(sent), "one audit line per call"
    for rid, (role, status) in sent.items():
        line = audit.loc[rid]
        assert line.status == status and line.endpoint == f"GET {PLAN}"
        assert line.role == (role if role not in (None, "bad") else None)
        if status != 401: assert line.model == "operations-plan" and line.action == "read"
    metrics = client.get("/metrics").text
    refused = sum(status == 403 for status in EXPECTED.values())     # each role without the plan, asked once
    assert f'kronkers_requests_total{{endpoint="{PLAN}",model="operations-plan",status="403"}} {float(refused)}' in metrics


def test_the_plan_served_is_the_plan_built(client, state, built):
    summary = json.loads(product_at(built, "operations.plan_summary").read_text())
    plan = pd.read_parquet(product_at(built, "operations.plan"))
    body = _get(client, state["keys"]["operations"]).json()
    for k in ("from", "to", "horizon_days", "forecast_model", "quantities", "inputs", "totals", "uncertainty"):
        assert body[k] == summary[k], k
    assert body["days_shown"] == len(plan) == len(body["days"]) == summary["horizon_days"]
    served = pd.DataFrame(body["days"])
    assert served.columns.tolist() == plan.columns.tolist()
    assert served.date.tolist() == plan.date.dt.strftime("%Y-%m-%d").tolist()
    numbers = plan.columns.drop("date")
    assert served[numbers].to_numpy(float) == pytest.approx(plan[numbers].to_numpy(float))
    in_json = pd.DataFrame(summary["days"])                                   # plan.json keeps 4 decimals
    assert in_json.columns.tolist() == plan.columns.tolist()
    assert served[numbers].to_numpy(float) == pytest.approx(in_json[numbers].to_numpy(float), abs=1e-4)
    # the auto share the plan used is the returns classifier's, as the operations plan test checks on the files
    review = json.loads(product_at(built, "returns.metrics").read_text())["review"]
    assert body["inputs"]["auto_share"] == pytest.approx(review["auto_share"])
    first = _get(client, state["keys"]["admin"], {"days": 2}).json()
    assert first["days_shown"] == 2 and first["days"] == body["days"][:2] and first["totals"] == body["totals"]


@pytest.mark.parametrize("days", ["0", "-3", "two", "1.5", "10000"])
def test_a_bad_days_is_a_422_naming_the_field(client, state, days):
    r = _get(client, state["keys"]["operations"], {"days": days})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["days"] and "days" in r.json()["detail"]


def test_no_plan_yet_is_a_503_that_says_what_builds_it(built, state, tmp_path):
    with serve(built, state["folder"], tmp_path / "empty") as c:
        r = _get(c, state["keys"]["operations"])
        assert r.status_code == 503 and "plan-operations" in r.json()["detail"]
        assert "operations/plan.parquet" in r.json()["detail"]
        assert _get(c, state["keys"]["marketing"]).status_code == 403
