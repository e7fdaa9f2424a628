"""Grafana dashboards of the Kronkers ML workbench, written with the typed builders of grafana-foundation-sdk
(Grafana Labs' generated types for Grafana 11.6), and a check of dashboard JSON against those types.

    python deploy/grafana/dashboards.py            # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/dashboards.py --check    # the committed JSON is what this file generates, and valid

Three dashboards, all on the Prometheus data source that provisioning/datasources/prometheus.yml provisions
(uid `kronkers-prometheus`): the model service (`kronkers serve`, scraped at /metrics), the nightly returns batch
job and the monitor (both pushed to the Pushgateway). Edit this file, run it, commit both.
"""
from __future__ import annotations

import argparse
import enum
import json
import sys
import typing
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as parts
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="kronkers-prometheus")
V1 = 'endpoint=~"/v1/.*"'          # model calls only: Prometheus' scrapes of /metrics and probes are left out


def _query(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend: q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def _series(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "", w: int = 12,
            log: bool = False) -> timeseries.Panel:
    "A time-series panel with its queries (refIds A, B, ...), legend as a table with the last and max values."
    p = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit).height(8).span(w)
         .legend(parts.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"])))
    if log:
        p = p.scale_distribution(parts.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10))
    for ref, q in zip("ABCDEFGH", queries): p = p.with_target(q.ref_id(ref))
    return p


def _stat(title: str, unit: str, query: prometheus.Dataquery, description: str = "", w: int = 6,
          steps: list[tuple[float | None, str]] | None = None) -> stat.Panel:
    "A stat panel showing the last value of one query, coloured by threshold `steps` [(from, colour), ...]."
    steps = steps or [(None, "green")]
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit).height(5).span(w)
            .with_target(query.ref_id("A"))
            .reduce_options(parts.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .thresholds(dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
                        .steps([model.Threshold(value=v, color=c) for v, c in steps])))


def _bars(title: str, unit: str, query: prometheus.Dataquery, description: str = "", w: int = 12) -> bargauge.Panel:
    "Horizontal bars, one per series (for instance one per category), of the last value of one query."
    return (bargauge.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit).height(8).span(w)
            .with_target(query.ref_id("A")).orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .reduce_options(parts.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def _variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    "A multi-value variable over the values of a label (All selected by default)."
    return (dashboard.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all")))


def _board(uid: str, title: str, description: str, tags: list[str]) -> dashboard.Dashboard:
    return (dashboard.Dashboard(title).uid(uid).description(description).tags(["kronkers", *tags]).readonly()
            .time("now-24h", "now").refresh("1m").timezone("browser")
            .tooltip(model.DashboardCursorSync.CROSSHAIR))


def service_dashboard() -> dashboard.Dashboard:
    "The model service: requests, latency percentiles, errors by model and endpoint, served versions."
    sel = f'{V1}, model=~"$model"'
    rate = "[$__rate_interval]"
    lat = f"sum by (le) (rate(kronkers_request_latency_seconds_bucket{{{sel}}}{rate}))"
    return (_board("kronkers-service", "Kronkers: model service",
                   "Requests, latency and errors of the model service (kronkers serve), by model and endpoint. "
                   "Model calls (/v1) only. Alerts: KronkersServiceErrors, KronkersServiceSlow, KronkersTargetDown.",
                   ["service"])
            .with_variable(_variable("model", "Model", f"label_values(kronkers_requests_total{{{V1}}}, model)"))
            .with_row(dashboard.Row("Traffic"))
            .with_panel(_stat("Requests per second", "reqps",
                              _query(f"sum(rate(kronkers_requests_total{{{sel}}}{rate}))", instant=True)))
            .with_panel(_stat("Share of calls failing with 5xx", "percentunit",
                              _query(f"(sum(rate(kronkers_request_errors_total{{{sel}, status=~\"5..\"}}{rate})) or vector(0))"
                                     f" / sum(rate(kronkers_requests_total{{{sel}}}{rate}))", instant=True),
                              description="Answers the service could not give (503: model not loaded, 500: error). "
                                          "The alert KronkersServiceErrors fires above 5% for 10 minutes.",
                              steps=[(None, "green"), (0.01, "orange"), (0.05, "red")]))
            .with_panel(_stat("95% of calls answered within", "s",
                              _query(f"histogram_quantile(0.95, {lat})", instant=True),
                              steps=[(None, "green"), (0.25, "orange"), (2.5, "red")]))
            .with_panel(_stat("Rows predicted per second", "short",
                              _query(f'sum(rate(kronkers_predictions_total{{model=~"$model"}}{rate}))', instant=True),
                              description="Stops, forecast days or photos answered per second."))
            .with_panel(_series("Requests per second by model and endpoint", "reqps",
                                _query(f"sum by (model, endpoint) (rate(kronkers_requests_total{{{sel}}}{rate}))",
                                       "{{model}} {{endpoint}}")))
            .with_panel(_series("Answers per second by status", "reqps",
                                _query(f"sum by (status) (rate(kronkers_requests_total{{{sel}}}{rate}))", "{{status}}")))
            .with_row(dashboard.Row("Latency"))
            .with_panel(_series("Latency percentiles (all selected models)", "s",
                                _query(f"histogram_quantile(0.50, {lat})", "p50"),
                                _query(f"histogram_quantile(0.95, {lat})", "p95"),
                                _query(f"histogram_quantile(0.99, {lat})", "p99"),
                                description="Estimated from the histogram kronkers_request_latency_seconds "
                                            "(buckets 1 ms to 10 s)."))
            .with_panel(_series("p95 latency by model and endpoint", "s",
                                _query("histogram_quantile(0.95, sum by (le, model, endpoint) "
                                       f"(rate(kronkers_request_latency_seconds_bucket{{{sel}}}{rate})))",
                                       "{{model}} {{endpoint}}"),
                                description="KronkersServiceSlow fires above 0.25 s (returns: 2.5 s) for 15 minutes."))
            .with_row(dashboard.Row("Errors"))
            .with_panel(_series("Errors per second by model, endpoint and status", "reqps",
                                _query("sum by (model, endpoint, status) "
                                       f"(rate(kronkers_request_errors_total{{{sel}}}{rate}))",
                                       "{{model}} {{endpoint}} {{status}}"),
                                description="4xx: the caller's (401 no or bad key, 403 role, 413 too large, 422 bad "
                                            "input); 5xx: the service's."))
            .with_panel(_series("Error share by model", "percentunit",
                                _query(f"(sum by (model) (rate(kronkers_request_errors_total{{{sel}}}{rate}))"
                                       f" or sum by (model) (rate(kronkers_requests_total{{{sel}}}{rate})) * 0)"
                                       f" / sum by (model) (rate(kronkers_requests_total{{{sel}}}{rate}))", "{{model}}",
                                ), description="4xx and 5xx answers over all answers; 0 for a model without errors."))
            .with_row(dashboard.Row("Models"))
            .with_panel(_series("Served version by model", "none",
                                _query('max by (model) (kronkers_model_version{model=~"$model"})', "{{model}}"),
                                description="The registry version of each champion; a step is a promotion, a "
                                            "rollback or a reload."))
            .with_panel(_series("Champion reloads by outcome", "short",
                                _query("sum by (outcome) (increase(kronkers_reloads_total[$__rate_interval]))",
                                       "{{outcome}}"))))


def batch_dashboard() -> dashboard.Dashboard:
    "The nightly returns batch job: photos, errors, latency, categories, last success (each a last run's push)."
    j = '{job=~"$job"}'
    return (_board("kronkers-returns-batch", "Kronkers: returns batch job",
                   "The nightly returns batch job (kronkers-returns-batch), as its last run pushed it to the "
                   "Pushgateway. Alert: KronkersReturnsBatchStale (no success in 26 hours).", ["returns", "batch"])
            .with_variable(_variable("job", "Job", "label_values(kronkers_returns_batch_last_success_unixtime, job)"))
            .with_panel(_stat("Since the last success", "s",
                              _query(f"time() - max(kronkers_returns_batch_last_success_unixtime{j})", instant=True),
                              description="The alert KronkersReturnsBatchStale fires after 26 hours (93,600 s).",
                              steps=[(None, "green"), (86400, "orange"), (93600, "red")]))
            .with_panel(_stat("Photos in the last run", "short",
                              _query(f"sum(kronkers_returns_batch_images_processed{j})", instant=True)))
            .with_panel(_stat("Unreadable photos in the last run", "short",
                              _query(f"sum(kronkers_returns_batch_images_errors{j})", instant=True),
                              steps=[(None, "green"), (1, "orange")]))
            .with_panel(_stat("Photos for a person to review", "short",
                              _query(f"sum(kronkers_returns_batch_images_needs_review{j})", instant=True),
                              description="Confidence below the review threshold."))
            .with_panel(_series("Photos per run", "short",
                                _query(f"max by (job) (kronkers_returns_batch_images_processed{j})", "{{job}} processed"),
                                _query(f"max by (job) (kronkers_returns_batch_images_errors{j})", "{{job}} errors"),
                                _query(f"max by (job) (kronkers_returns_batch_images_needs_review{j})",
                                       "{{job}} needs review")))
            .with_panel(_bars("Categories in the last run", "short",
                              _query(f"sum by (category) (kronkers_returns_batch_category_images{j})", "{{category}}",
                                     instant=True)))
            .with_panel(_series("Seconds per batch of photos (last run)", "s",
                                _query(f"histogram_quantile(0.5, sum by (le) (kronkers_returns_batch_batch_seconds_bucket{j}))",
                                       "p50"),
                                _query(f"histogram_quantile(0.95, sum by (le) (kronkers_returns_batch_batch_seconds_bucket{j}))",
                                       "p95"),
                                _query(f"sum(kronkers_returns_batch_batch_seconds_sum{j}) / "
                                       f"sum(kronkers_returns_batch_batch_seconds_count{j})", "mean"),
                                description="Read, classify, append and flush one batch; the histogram of the last run."))
            .with_panel(_series("Run duration and last success", "s",
                                _query(f"max by (job) (kronkers_returns_batch_duration_seconds{j})", "{{job}} duration"),
                                _query(f"time() - max by (job) (kronkers_returns_batch_last_success_unixtime{j})",
                                       "{{job}} since success"))))


def monitor_dashboard() -> dashboard.Dashboard:
    "The monitor: open alerts, drift p-values per feature, performance windows."
    f = '{family=~"$family"}'
    return (_board("kronkers-monitor", "Kronkers: model monitor",
                   "Drift and performance gauges that kronkers-monitor pushes after each check. "
                   "Alert: KronkersMonitorAlertOpen.", ["monitoring"])
            .with_variable(_variable("family", "Family", "label_values(kronkers_monitor_breach, family)"))
            .with_panel(_bars("Open alerts (1 = threshold crossed)", "none",
                              _query(f"max by (family, kind) (kronkers_monitor_breach{f})", "{{family}} {{kind}}",
                                     instant=True), w=8))
            .with_panel(_series("Drift p-value by feature (Hellinger distance where configured)", "none",
                                _query(f"min by (family, column) (kronkers_drift_pvalue{f})", "{{family}} {{column}}"),
                                description="Lower is stronger evidence of drift; the monitor's threshold is "
                                            "monitoring.drift_p_value in env.yaml (1e-6).", w=16, log=True))
            .with_panel(_series("Model MAE over the newest window", "none",
                                _query(f"max by (family) (kronkers_model_window_mae{f})", "{{family}}"),
                                description="Service time: seconds; returns: share of wrong categories. Against "
                                            "the normal for the window's weeks (see the monitoring page)."))
            .with_panel(_series("Model MASE over the newest window", "none",
                                _query(f"max by (family) (kronkers_model_window_mase{f})", "{{family}}"),
                                description="Demand: the forecast's error over the seasonal naive's."))
            .with_panel(_series("Hit rate of recommendations over the newest window", "percentunit",
                                _query(f"max by (family) (kronkers_model_window_hit_rate{f})", "{{family}}"),
                                description="Of the customers who bought in the newest window after the model's cut-off "
                                            "(as long as its test window), the share who bought one of the products it "
                                            "recommends them. Against the hit rate at evaluation (see the monitoring page)."))
            .with_panel(_series("Customers the hit rate is measured on", "none",
                                _query(f"max by (family) (kronkers_model_window_customers{f})", "{{family}}"),
                                description="Customers who bought in the newest window; the monitor judges the hit rate "
                                            "from 30 of them (config/monitoring.yaml).")))


BOARDS = {"service.json": service_dashboard, "returns-batch.json": batch_dashboard, "monitor.json": monitor_dashboard}


def generate() -> dict[str, dict]:
    "Every dashboard as the JSON Grafana reads, by file name; panel ids numbered in order."
    out = {}
    for name, make in BOARDS.items():
        data = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        for i, panel in enumerate(data.get("panels", []), 1): panel["id"] = i
        out[name] = data
    return out


def render(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- the check against Grafana's dashboard types --------------------------------------------------------------

def _fits(value, hint) -> bool:
    "Whether a decoded value fits a type hint of the SDK's models (str, float, list[...], Optional, Literal, ...)."
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is object: return True
    if origin is typing.Union: return any(_fits(value, a) for a in args)
    if origin is typing.Literal: return value in args
    if origin is list: return isinstance(value, list) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict: return isinstance(value, dict)
    if hint is type(None): return value is None
    if hint is float: return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int: return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try: hint(value)                                 # the decoder keeps enums as their raw values
        except ValueError: return False
        return True
    if isinstance(hint, type): return isinstance(value, hint)
    return True                                          # forward references already resolved by get_type_hints


def _json_name(attribute: str) -> str:
    "The JSON field of a model attribute: grid_pos -> gridPos, type_val -> type (the SDK's names for Python)."
    head, *rest = attribute.removesuffix("_val").split("_")
    return head + "".join(w.title() for w in rest)


def _type_problems(obj, where: str) -> list[str]:
    "Attributes of a decoded model object (recursively) whose values do not fit their declared types."
    if isinstance(obj, list):
        return [p for i, o in enumerate(obj) for p in _type_problems(o, f"{where}[{i}]")]
    if not hasattr(obj, "to_json") or not hasattr(type(obj), "__init__"):
        return []
    try:
        hints = typing.get_type_hints(type(obj))
    except Exception:                                    # a bag of unknown data (UnknownDataquery): nothing declared
        return []
    problems = []
    for name, hint in hints.items():
        value = getattr(obj, name, None)
        if value is None: continue
        if not _fits(value, hint):
            problems.append(f"{where}.{_json_name(name)}: {value!r} is not a {hint}")
        problems += _type_problems(value, f"{where}.{_json_name(name)}")
    return problems


def _diff(original, again, where: str) -> list[str]:
    """Where the JSON read back from the typed model differs from the original: fields the model does not have (the
    decoder drops them), values it reads differently. Defaults the decoder fills in are not differences."""
    if isinstance(original, dict) and isinstance(again, dict):
        out = [f"{where}.{k}: not a field of Grafana's dashboard schema" for k in original if k not in again]
        return out + [p for k in original if k in again for p in _diff(original[k], again[k], f"{where}.{k}")]
    if isinstance(original, list) and isinstance(again, list) and len(original) == len(again):
        return [p for i, (a, b) in enumerate(zip(original, again)) for p in _diff(a, b, f"{where}[{i}]")]
    return [] if original == again else [f"{where}: {original!r} reads back as {again!r}"]


def schema_problems(data: dict) -> list[str]:
    """What in a dashboard's JSON does not fit Grafana's dashboard types (grafana-foundation-sdk's models of the
    dashboard, its panels' options and field config, and Prometheus queries): a field the schema does not have, a
    value of the wrong type or outside its enum, a required field missing. Empty when the dashboard fits."""
    plugins.register_default_plugins()
    if not isinstance(data, dict): return [f"dashboard: a JSON object is needed, got {type(data).__name__}"]
    try:
        board = model.Dashboard.from_json(data)
        again = json.loads(json.dumps(board, cls=JSONEncoder))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        return [f"dashboard: does not decode as a Grafana dashboard: {type(e).__name__}: {e}"]
    return _type_problems(board, "dashboard") + _diff(data, again, "dashboard")


# --- the queries ---------------------------------------------------------------------------------------------

def queries(data: dict) -> list[tuple[str, str, bool]]:
    """Every PromQL expression of a dashboard as (where, expr, instant): panel targets (inside rows too), then the
    variables' queries (`label_values(...)`, instant)."""
    found = []
    def walk(panels, where):
        for p in panels or []:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    found.append((f"{where} panel {p.get('title')!r} {t.get('refId')}", t["expr"], bool(t.get("instant"))))
            walk(p.get("panels"), where)
    walk(data.get("panels"), data.get("uid", "?"))
    for v in (data.get("templating") or {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q: found.append((f"{data.get('uid')} variable ${v['name']}", q, True))
    return found


def variables(data: dict) -> dict[str, str]:
    "The dashboard's query variables: name -> query."
    return {where.rsplit("$", 1)[1]: q for where, q, _ in queries(data) if " variable $" in where}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="check the committed JSON instead of writing it")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder of the JSON files (default: {OUT.relative_to(HERE.parents[1])})")
    args = ap.parse_args(argv)
    failed = False
    for name, data in generate().items():
        path = args.out / name
        problems = schema_problems(data)
        if args.check:
            if not path.exists() or path.read_text() != render(data):
                problems.append(f"{path} differs from what deploy/grafana/dashboards.py generates: run it and commit")
            else:
                problems += schema_problems(json.loads(path.read_text()))
        elif not problems:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(data))
            print(f"wrote {path}")
        for p in problems: print(f"{name}: {p}", file=sys.stderr)
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
