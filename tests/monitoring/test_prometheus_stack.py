"""The Prometheus and Grafana files of deploy/ against the real thing.

promtool checks the configuration and the alert rules and runs their unit tests (deploy/prometheus/alerts.test.yml);
the committed dashboards are what deploy/grafana/dashboards.py generates and fit Grafana's dashboard types
(grafana-foundation-sdk), which a broken dashboard does not. Then Debian's Prometheus, started on a configuration
made from deploy/prometheus/prometheus.yml with only the targets, the intervals and the rule file's path changed,
scrapes the model service (serving the tiny build of the `built` fixture) and a Pushgateway after some calls, a run of the
returns batch job and a push of the monitor's gauges: every query of the dashboards and of the alert rules returns
data, and the alerts whose conditions hold (a batch job that last succeeded 27 hours ago, a monitor breach) fire
while the others do not."""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import time
import types
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import ROOT, free_port, product_at, running_service, wait_up

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
DEPLOY_PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"
STALE_JOB = "kronkers_returns_batch_stale"      # a second batch job whose last success is 27 hours old
ROUNDS, CALLS_A_ROUND = 3, 5                    # model calls: 3 rounds of the 5 calls of _traffic

needs_prometheus = pytest.mark.skipif(not Path(PROMTOOL).exists() or not Path(PROMETHEUS).exists(),
                                      reason="Debian's prometheus is not installed (make system-deps installs it)")


def _generator() -> types.ModuleType:
    """deploy/grafana/dashboards.py as a module (a script of deploy/, not part of the package), run from its source
    so that no bytecode cache is left in deploy/."""
    path = ROOT / "deploy" / "grafana" / "dashboards.py"
    module = types.ModuleType("kronkers_grafana_dashboards")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


gen = _generator()


def committed_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


# --- the files themselves -------------------------------------------------------------------------------------

@needs_prometheus
def test_promtool_checks_the_config_and_rules_and_runs_the_rules_unit_tests():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([PROMTOOL, *args], cwd=DEPLOY_PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


def test_committed_dashboards_are_what_the_generator_writes():
    generated = gen.generate()
    assert set(generated) == set(committed_dashboards()) == {"service.json", "returns-batch.json", "monitor.json"}
    for name, data in generated.items():
        assert (DASHBOARDS_DIR / name).read_text() == gen.render(data), \
            f"{name} differs from deploy/grafana/dashboards.py's output: run `python deploy/grafana/dashboards.py`"


def test_dashboards_fit_grafana_schema_and_a_broken_one_does_not():
    boards = committed_dashboards()
    for name, data in boards.items():
        assert gen.schema_problems(data) == [], name
    service = boards["service.json"]
    stat_panel = next(i for i, p in enumerate(service["panels"]) if p["type"] == "stat")
    breakages = {
        "pannels": lambda d: d.update(pannels=d["panels"]),                                   # a misspelt field
        "title": lambda d: d.update(title=["Kronkers"]),                                      # a wrong type
        "colorMode": lambda d: d["panels"][stat_panel]["options"].update(colorMode="rainbow"),  # not in the enum
        "unitt": lambda d: d["panels"][stat_panel]["fieldConfig"]["defaults"].update(unitt="s"),
        "exp": lambda d: d["panels"][stat_panel]["targets"][0].update(exp="up"),               # a query field
        "refresh": lambda d: d["templating"]["list"][0].update(refresh=9),
        "dashboard": lambda d: d.update(panels="none"),                                        # does not decode
    }
    for field, breaks in breakages.items():
        broken = copy.deepcopy(service)
        breaks(broken)
        problems = gen.schema_problems(broken)
        assert problems and any(field in p for p in problems), (field, problems)


def test_the_generator_refuses_to_pass_a_hand_edited_file(tmp_path):
    for name, data in gen.generate().items():
        (tmp_path / name).write_text(gen.render(data))
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    edited = json.loads((tmp_path / "monitor.json").read_text())
    edited["title"] = "Edited by hand"
    (tmp_path / "monitor.json").write_text(gen.render(edited))
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1


# --- a real Prometheus --------------------------------------------------------------------------------------------

def derived_config(targets: dict[str, str], rules: Path, interval: str = "1s") -> dict:
    """deploy/prometheus/prometheus.yml with the targets of each scrape job replaced (by job name), the scrape and
    evaluation intervals shortened and the rule file named by its full path; everything else as deployed."""
    cfg = yaml.safe_load((DEPLOY_PROMETHEUS / "prometheus.yml").read_text())
    assert {job["job_name"] for job in cfg["scrape_configs"]} == set(targets)
    cfg["global"].update(scrape_interval=interval, evaluation_interval=interval)
    cfg["rule_files"] = [str(rules)]
    for job in cfg["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return cfg


def test_the_test_config_differs_from_the_deployed_one_only_in_targets_intervals_and_paths(tmp_path):
    deployed = yaml.safe_load((DEPLOY_PROMETHEUS / "prometheus.yml").read_text())
    derived = derived_config({"kronkers-service": "127.0.0.1:1", "pushgateway": "127.0.0.1:2"}, tmp_path / "alerts.yml")
    for cfg in (deployed, derived):
        cfg["global"].pop("scrape_interval"); cfg["global"].pop("evaluation_interval"); cfg.pop("rule_files")
        for job in cfg["scrape_configs"]: job.pop("static_configs")
    assert derived == deployed
    assert next(j for j in deployed["scrape_configs"] if j["job_name"] == "pushgateway")["honor_labels"] is True


@contextmanager
def _process(cmd: list[str], ready_url: str, log: Path, timeout_s: float = 60):
    "A server process logging to `log`, yielded once `ready_url` answers 200; terminated afterwards."
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_up(ready_url, proc, log, timeout_s, cmd[0])
        yield proc
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()


def _photos(folder: Path, n: int) -> list[Path]:
    "n small grey PNG photos (seeded noise)."
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"item{i:03d}.png" for i in range(n)]
    for p in paths: Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(p)
    return paths


def _traffic(client: httpx.Client, keys: dict[str, str], stops_csv: bytes, photos: list[Path]) -> None:
    "One round of model calls: answered ones (200) and refused ones (401 without a key, 422 bad input)."
    ops, proc = {"X-API-Key": keys["operations"]}, {"X-API-Key": keys["procurement"]}
    assert client.post("/v1/models/service-time/predict.csv", content=stops_csv,
                       headers={**ops, "Content-Type": "text/csv"}).status_code == 200
    assert client.get("/v1/models/demand/forecast", params={"horizon": 7}, headers=proc).status_code == 200
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in photos[:3]]
    assert client.post("/v1/models/returns/classify", files=files, headers=ops).status_code == 200
    assert client.get("/v1/models/demand/forecast", params={"horizon": 7}).status_code == 401
    assert client.get("/v1/models/demand/forecast", params={"horizon": -1}, headers=proc).status_code == 422


@pytest.fixture(scope="module")
def stack(built, tmp_path_factory):
    """A Pushgateway, the model service on the tiny build's registry (the returns version promoted in a copy of the
    store, so that every family is served), and Prometheus scraping both; then traffic, a returns batch run, a
    batch push 27 hours old and a monitor push. Yields the Prometheus address and what was pushed."""
    if not Path(PROMETHEUS).exists() or not Path(PUSHGATEWAY).exists():
        pytest.skip("Debian's prometheus and prometheus-pushgateway are needed (make system-deps installs them)")
    from prometheus_client import push_to_gateway
    from kronkers_ml.monitoring.monitor import write_gauges
    from kronkers_ml.platform.access import create_key, load_roles
    from kronkers_ml.platform.registry import set_champion
    from kronkers_ml.returns.batch import EXIT_OK, main as batch_main, metrics_registry
    from kronkers_ml.service_time.features import FEATURES

    tmp = tmp_path_factory.mktemp("prometheus-stack")
    store = tmp / "mlflow.db"                       # the build's store stays untouched; artifacts are read from it
    shutil.copy(built / "mlflow" / "mlflow.db", store)
    uri = f"sqlite:///{store}"
    returns_version = json.loads((built / "returns" / "registration.json").read_text())["version"]
    set_champion(uri, "returns", returns_version, "test", "served for the monitoring stack test")
    roles_path = ROOT / "config" / "roles.yaml"
    roles = load_roles(roles_path)
    keys = {r: create_key(tmp / "state" / "keys.json", r, roles, f"test {r}")[1] for r in ("operations", "procurement")}
    features = pd.read_parquet(built / "service_time" / "features.parquet")
    stops_csv = features.head(20)[["stop_id", *FEATURES]].to_csv(index=False).encode()
    photos = _photos(tmp / "inbox", 6)

    gateway = f"127.0.0.1:{free_port()}"
    prom = f"127.0.0.1:{free_port()}"
    pushed: dict = {}

    def pushes():
        "The nightly batch job as deploy/nightly runs it, a batch job that last succeeded 27 hours ago, the monitor."
        code = batch_main(["--input", str(tmp / "inbox"), "--output", str(tmp / "results.csv"), "--no-progress",
                           "--model", str(product_at(built, "returns.model")), "--batch-size", "4",
                           "--pushgateway", gateway, "--summary-json", str(tmp / "summary.json")])
        pushed["code"] = code
        pushed["summary"] = summary = json.loads((tmp / "summary.json").read_text())
        push_to_gateway(gateway, job=STALE_JOB, registry=metrics_registry(summary, finished=time.time() - 27 * 3600))
        # the monitor's gauges: drift found in service time (one feature far below its p-value threshold)
        results = {
            "service_time": {"drift": {"breach": True, "scores": [
                                 {"column": "parking_difficulty", "algorithm": "ks", "pvalue": 1e-9, "statistic": 0.4},
                                 {"column": "n_items", "algorithm": "ks", "pvalue": 0.6, "statistic": 0.02}]},
                             "performance": {"breach": False, "checked": True, "mae": 118.0, "mase": None}},
            "demand": {"drift": {"breach": False, "scores": [
                           {"column": "unit_price", "algorithm": "hellinger", "pvalue": None, "statistic": 0.03}]},
                       "performance": {"breach": False, "checked": True, "mae": 2100.0, "mase": 0.8}},
            "recommendations": {"drift": {"breach": False, "scores": [
                                    {"column": "repeat_share", "algorithm": "ks", "pvalue": 0.3, "statistic": 0.05}]},
                                "performance": {"breach": False, "checked": True, "mae": None, "metric": "hit_rate",
                                                "hit_rate": 0.89, "customers": 354}}}
        write_gauges(results, tmp, f"http://{gateway}")

    with _process([PUSHGATEWAY, f"--web.listen-address={gateway}"], f"http://{gateway}/-/ready", tmp / "pushgateway.log"):
        worker = ThreadPoolExecutor(1)
        pushing = worker.submit(pushes)             # while the service loads its models
        with running_service(["--out", str(built), "--tracking-uri", uri, "--state-dir", str(tmp / "state"),
                              "--roles", str(roles_path), "--models", "service-time,demand,returns"], tmp / "service.log",
                             timeout_s=300) as client:     # a loaded host takes a while to load three models
            pushing.result(); worker.shutdown()
            assert pushed["code"] == EXIT_OK
            service = client.base_url.netloc.decode()
            cfg = derived_config({"kronkers-service": service, "pushgateway": gateway}, DEPLOY_PROMETHEUS / "alerts.yml")
            (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            with _process([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                           f"--web.listen-address={prom}"], f"http://{prom}/-/ready", tmp / "prometheus.log"):
                stack = {"prometheus": f"http://{prom}", "summary": pushed["summary"]}
                until(lambda: instant(stack, 'up{job="kronkers-service"} == 1'), 60, "a first scrape of the service")
                for done in range(1, ROUNDS + 1):  # each round scraped before the next, so that rates are not 0
                    _traffic(client, keys, stops_csv, photos)
                    until(lambda: total(stack, 'sum(kronkers_requests_total{endpoint=~"/v1/.*"})') >= CALLS_A_ROUND * done,
                          60, f"round {done} of the calls scraped")
                yield stack


def _api(stack: dict, path: str, **params) -> dict:
    r = httpx.get(f"{stack['prometheus']}/api/v1/{path}", params=params, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{path} {params}: {r.status_code} {body}"
    return body["data"]


def instant(stack: dict, expr: str) -> list[dict]:
    "The samples of an instant query now (a scalar as one sample without labels)."
    data = _api(stack, "query", query=expr)
    return [{"metric": {}, "value": data["result"]}] if data["resultType"] == "scalar" else data["result"]


def over_last_minutes(stack: dict, expr: str, minutes: int = 3) -> list[dict]:
    "The series of a range query over the last minutes, one point a second, each as its last finite point."
    now = time.time()
    data = _api(stack, "query_range", query=expr, start=now - 60 * minutes, end=now, step=1)
    out = []
    for series in data["result"]:
        finite = [v for v in series["values"] if math.isfinite(float(v[1]))]
        if finite: out.append({"metric": series["metric"], "value": finite[-1]})
    return out


def finite(samples: list[dict]) -> list[dict]:
    "The samples whose value is a number (not NaN, not infinite)."
    return [s for s in samples if math.isfinite(float(s["value"][1]))]


def until(check, timeout_s: float = 60, what: str = ""):
    "Poll `check()` until it returns something true; that value."
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value: return value
        assert time.monotonic() < deadline, f"not seen in {timeout_s:.0f} s: {what}"
        time.sleep(0.5)


def total(stack: dict, expr: str) -> float:
    return sum(float(s["value"][1]) for s in instant(stack, expr))




@pytest.fixture(scope="module")
def scraped(stack):
    "The stack once Prometheus has scraped every call and every push."
    until(lambda: len(instant(stack, "kronkers_returns_batch_last_success_unixtime")) == 2, what="both batch pushes")
    until(lambda: instant(stack, "kronkers_model_window_mase"), what="the monitor's push")
    return stack


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def variable_values(stack: dict, query: str) -> list[str]:
    "What Grafana offers for a `label_values(selector, label)` variable, asked as Grafana asks Prometheus."
    m = LABEL_VALUES.match(query.strip())
    assert m, f"variable query not understood: {query}"
    return _api(stack, f"label/{m['label']}/values", **({"match[]": m["selector"]} if m["selector"] else {}))


def grafana_escape(value: str) -> str:
    "A variable's value as Grafana writes it into a Prometheus regex: special characters behind a doubled backslash."
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def grafana_expr(expr: str, values: dict[str, list[str]]) -> str:
    """The query Grafana sends: each variable replaced by the regex of its values (All selected), $__rate_interval
    by a window that holds the whole test's scrapes."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "5s").replace("$__range", "5m")
    for name, vals in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${name}", "(" + "|".join(grafana_escape(v) for v in vals) + ")")
    assert "$" not in expr, f"a template variable is left in {expr}"
    return expr


def test_prometheus_scrapes_the_service_and_the_gateway_with_the_pushers_job_labels(scraped):
    up = {s["metric"]["job"]: s["value"][1] for s in instant(scraped, "max by (job) (max_over_time(up[5m]))")}
    assert up == {"kronkers-service": "1", "pushgateway": "1"}          # both scraped (a slow scrape may time out)
    # honor_labels: the batch job's and the monitor's own job labels, not the scrape job's name
    processed = {s["metric"]["job"]: float(s["value"][1]) for s in instant(scraped, "kronkers_returns_batch_images_processed")}
    assert processed == {"kronkers_returns_batch": 6, STALE_JOB: 6}
    assert total(scraped, 'kronkers_returns_batch_category_images{job="kronkers_returns_batch"}') == 6 - scraped["summary"]["errors"]
    breach = {(s["metric"]["family"], s["metric"]["kind"]): s["value"][1]
              for s in instant(scraped, 'kronkers_monitor_breach{job="kronkers_monitor"}')}
    assert breach == {("service_time", "drift"): "1", ("service_time", "performance"): "0",
                      ("demand", "drift"): "0", ("demand", "performance"): "0",
                      ("recommendations", "drift"): "0", ("recommendations", "performance"): "0"}
    calls = {(s["metric"]["endpoint"], s["metric"]["status"]): float(s["value"][1])
             for s in instant(scraped, 'sum by (endpoint, status) (kronkers_requests_total{endpoint=~"/v1/.*"})')}
    assert calls == {("/v1/models/service-time/predict.csv", "200"): ROUNDS, ("/v1/models/demand/forecast", "200"): ROUNDS,
                     ("/v1/models/returns/classify", "200"): ROUNDS, ("/v1/models/demand/forecast", "401"): ROUNDS,
                     ("/v1/models/demand/forecast", "422"): ROUNDS}
    assert {s["metric"]["model"] for s in instant(scraped, "kronkers_requests_total")} >= {"service-time", "demand", "returns"}


def test_every_dashboard_query_returns_data(scraped):
    checked = []
    for name, board in committed_dashboards().items():
        values = {var: variable_values(scraped, query) for var, query in gen.variables(board).items()}
        assert all(values.values()), f"{name}: a variable without values: {values}"
        for where, expr, is_instant in gen.queries(board):
            if " variable $" in where: continue
            q = grafana_expr(expr, values)
            samples = finite(instant(scraped, q)) if is_instant else over_last_minutes(scraped, q)
            assert samples, f"{where}: no data for {q}"
            checked.append(where)
    assert len(checked) >= 30 and {w.split()[0] for w in checked} == {"kronkers-service", "kronkers-returns-batch", "kronkers-monitor"}


THRESHOLD = re.compile(r"\s*(?:>=|<=|==|!=|>|<)\s*(?:bool\s+)?-?\d[\d.eE+-]*")


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((DEPLOY_PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def measured(rule: dict) -> str:
    "What an alert rule measures: its expression with the comparisons against numbers taken out."
    expr, n = THRESHOLD.subn("", rule["expr"])
    assert n >= 1, f"{rule['alert']}: no threshold in {rule['expr']}"
    return expr


def test_every_alert_rule_query_returns_data(scraped):
    rules = alert_rules()
    assert set(rules) == {"KronkersReturnsBatchStale", "KronkersServiceErrors", "KronkersServiceSlow",
                          "KronkersTargetDown", "KronkersMonitorAlertOpen"}
    for name, rule in rules.items():
        assert finite(instant(scraped, measured(rule))), f"{name}: no data for {measured(rule)}"
    # the service rules see every served model: no 5xx was answered (share 0), latencies are numbers
    errors = {s["metric"]["model"]: float(s["value"][1]) for s in instant(scraped, measured(rules["KronkersServiceErrors"]))}
    assert set(errors) >= {"service-time", "demand", "returns"} and set(errors.values()) == {0.0}, errors
    slow = finite(instant(scraped, measured(rules["KronkersServiceSlow"])))
    assert {s["metric"]["model"] for s in slow} >= {"service-time", "demand", "returns"}
    since = {s["metric"]["job"]: float(s["value"][1]) for s in instant(scraped, measured(rules["KronkersReturnsBatchStale"]))}
    assert since[STALE_JOB] >= 27 * 3600 > 26 * 3600 > since["kronkers_returns_batch"] >= 0


def test_alerts_whose_condition_holds_fire_and_the_others_do_not(scraped):
    expected = {("KronkersReturnsBatchStale", STALE_JOB, None, None), ("KronkersMonitorAlertOpen", None, "service_time", "drift")}

    def alerts():
        return {(a["labels"]["alertname"], a["labels"].get("job"), a["labels"].get("family"), a["labels"].get("kind")): a["state"]
                for a in _api(scraped, "alerts")["alerts"]}
    def both():
        seen = alerts()
        return seen if expected <= set(seen) else None
    states = until(both, 30, "the stale batch and the drift alerts")
    assert all(states[k] == "firing" for k in expected), states
    # tonight's batch run and the clean checks are quiet, and both targets up; the service rules need 20 calls a
    # model in 10 minutes (there were 3 to 9), so they are not even pending. (A scrape that timed out on a loaded
    # host may leave KronkersTargetDown pending, never firing in the 5 minutes it waits.)
    assert {k for k, state in states.items() if state == "firing"} == expected, states
    assert not {k[0] for k in states} & {"KronkersServiceErrors", "KronkersServiceSlow"}, states
