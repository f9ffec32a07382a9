"""Dashboards are valid Grafana JSON, and dashboards, alerts and the PodMonitor use the metric
names, labels, ports and paths the code really has."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from conftest import CHART, ROOT, render

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
MONITORING = CHART / "ci" / "monitoring-on.yaml"

# Metrics the design names but no code registers yet: the gateway is being built (issue 4:
# `hearth_gateway_requests_total{model,tier,code}`). Everything else must be registered in code.
PLANNED: dict[str, set[str]] = {}
# Labels Prometheus adds to every scraped series, and the ones the PodMonitor relabels in.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint", "model", "served_name", "le"}

GRAFANA_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "panels", "schemaVersion", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": {"type": "object", "required": ["name", "type"]}}},
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge", "heatmap", "text"]},
                    "gridPos": {
                        "type": "object",
                        "required": ["x", "y", "w", "h"],
                        "properties": {k: {"type": "integer", "minimum": 0} for k in "xywh"},
                    },
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object", "required": ["expr", "refId"], "properties": {"expr": {"type": "string", "minLength": 1}}},
                    },
                },
            },
        },
    },
}


def code_metrics() -> tuple[set[str], set[str]]:
    """Metric names registered in the operator and runtime-node, and their label names."""
    names, labels = set(), set()
    for path in [*(ROOT / "operator").glob("**/src/**/*.rs"), *(ROOT / "runtime-node").glob("**/src/**/*.rs")]:
        text = path.read_text()
        if not re.search(r"(Histogram|Opts|IntCounter|IntGauge|Gauge|Counter)\w*::(new|with_opts)", text):
            continue
        names |= set(re.findall(r'"(hearth_[a-z0-9_]+)"', text))
        for group in re.findall(r'&\[\s*("[a-z_]+"(?:\s*,\s*"[a-z_]+")*)\s*,?\s*\]', text):
            labels |= set(re.findall(r'"([a-z_]+)"', group))
    return names, labels


def base_metric(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard target and alert rule."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                found.append((f"{path.name} '{panel['title']}'", target["expr"]))
    rule = next(o for o in render(MONITORING).objects() if o["kind"] == "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            found.append((f"alert {r.get('alert')}", str(r["expr"])))
    return found


def test_dashboards_exist_for_gateway_engine_billing_and_operator():
    assert {p.stem for p in DASHBOARDS} == {"gateway", "engine", "billing", "operator"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_is_valid_grafana_json(path):
    dashboard = json.loads(path.read_text())
    jsonschema.Draft202012Validator(GRAFANA_SCHEMA).validate(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range", "__interval"}
            assert used <= variables, f"{panel['title']}: undefined variables {used - variables}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            used = set(re.findall(r"\$(\w+)", variable["query"]["query"]))
            assert used <= variables


def test_dashboard_configmaps_carry_the_dashboards():
    maps = {o["metadata"]["name"]: o for o in render(MONITORING).objects() if o["kind"] == "ConfigMap"}
    for path in DASHBOARDS:
        config_map = maps[f"hearth-dashboard-{path.stem}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert json.loads(config_map["data"][f"hearth-{path.stem}.json"]) == json.loads(path.read_text())


def test_promql_is_balanced():
    for where, expr in expressions():
        stack = []
        for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
            if char in "([{":
                stack.append(char)
            elif char in ")]}":
                assert stack and "([{"[")]}".index(char)] == stack.pop(), f"{where}: unbalanced {expr}"
        assert not stack, f"{where}: unbalanced {expr}"


def test_metrics_and_labels_exist_in_the_code():
    names, labels = code_metrics()
    assert {"hearth_operator_reconciles_total", "hearth_engine_time_to_first_token_seconds", "hearth_meter_records_total"} <= names
    for name in PLANNED:
        assert name not in names, f"{name} is registered now: drop it from PLANNED"
    known_labels = labels | TARGET_LABELS | {label for planned in PLANNED.values() for label in planned}
    for where, expr in expressions():
        for metric in re.findall(r"\bhearth_[a-z0-9_]+", expr):
            assert base_metric(metric) in names | set(PLANNED), f"{where}: {metric} is not a metric the code registers"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                assert label in known_labels, f"{where}: label {label} is not on any Hearth metric"
        for label in re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)", expr):
            assert label in known_labels, f"{where}: label {label} is not on any Hearth metric"


def test_gateway_metrics_are_scraped_from_their_own_port_never_the_service():
    objects = render(MONITORING).objects()
    monitor = next(o for o in objects if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "hearth-gateway")
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [("metrics", "/metrics")]
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "hearth-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--metrics-listen=0.0.0.0:{ports['metrics']}" in container["args"]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "hearth-gateway")
    assert all(p["targetPort"] != "metrics" and p["port"] != ports["metrics"] for p in service["spec"]["ports"])


def test_pod_monitor_matches_runtime_pods():
    monitor = next(
        o for o in render(MONITORING).objects() if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "hearth-runtime"
    )
    constants = (ROOT / "crds/src/constants.rs").read_text()
    deployment = (ROOT / "operator/controller/src/model/build/deployment.rs").read_text()
    app_name = re.search(r'APP_NAME: &str = "([^"]+)"', constants).group(1)
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": app_name}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # Prometheus turns a pod label's dots and slashes into underscores.
    model_label = re.search(r'LABEL_MODEL: &str = "([^"]+)"', constants).group(1)
    meta_label = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", model_label)
    endpoints = {(e["port"], e["path"]): e for e in monitor["spec"]["podMetricsEndpoints"]}
    # The engine's own metrics: on its port when unmetered, through the meter (which passes
    # `GET /metrics` on without a token) when it listens on the pod's loopback.
    assert set(endpoints) == {("engine", "/metrics"), ("meter", "/metrics"), ("meter", "/meter/metrics")}
    assert '"/health" | "/ready" | "/metrics"' in (ROOT / "runtime-node/meter/src/auth.rs").read_text()
    for port, _ in endpoints:
        assert f'name: Some("{port}".into())' in deployment
    for endpoint in endpoints.values():
        assert endpoint["relabelings"][0] == {"sourceLabels": [meta_label], "targetLabel": "model"}
    ports = {"meter": {"path": "/meter/metrics"}}
    # KEDA queries (model/build/scaled_object.rs) select on that `model` label.
    assert 'model=\\"{name}\\"' in (ROOT / "operator/controller/src/model/build/scaled_object.rs").read_text()
    meter_routes = (ROOT / "runtime-node/meter/src/lib.rs").read_text()
    assert f'.route("{ports["meter"]["path"]}"' in meter_routes


def test_alerts_have_summaries_and_severities():
    rule = next(o for o in render(MONITORING).objects() if o["kind"] == "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) >= 5
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"]
    # Prometheus's own templating passes through Helm untouched.
    assert any("{{ $labels.controller }}" in a["annotations"]["summary"] for a in alerts)
    ttft = next(a for a in alerts if a["alert"] == "HearthTimeToFirstTokenHigh")
    assert ttft["expr"].endswith("> 1.5")
    assert yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]["ttftP95Seconds"] == 2


def test_autoscaling_metrics_are_metrics_the_engine_exports():
    names, _ = code_metrics()
    source = (ROOT / "crds/src/inference_model.rs").read_text()
    body = source[source.index("fn prometheus_name") :]
    body = body[: body.index("\n    }\n")]
    autoscaling = set(re.findall(r'"(hearth_[a-z0-9_]+)"', body))
    assert len(autoscaling) == 3
    assert autoscaling <= names, f"not exported by any component: {sorted(autoscaling - names)}"
