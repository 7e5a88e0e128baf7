"""Monitoring: scrape targets, one PrometheusRule and one Grafana dashboard per deployment, the same
on both stacks.

Pure values from the plan. The llmd stack scrapes through the charts (llm-d-modelservice
`decode.monitoring.podmonitor`, llm-d-router-gateway `router.monitoring`); the kserve stack gets
PodMonitors from us. Metric names are the pinned upstreams': the endpoint picker's `llm_d_epp_*`
(llm-d-router v0.10.0 pkg/epp/metrics) and vLLM's `vllm:*` (checked against a real vLLM's /metrics
in tests/test_monitoring.py). docs/monitoring.md lists the alerts and the dashboard's panels.
"""
from __future__ import annotations

import hashlib
import json

from lightrail.plan import VLLM_PORT, ModelServer, Plan

# Alert thresholds (docs/monitoring.md).
ERROR_RATIO = {"warning": 0.05, "critical": 0.20}
QUEUE_DEPTH = 10            # requests waiting per model server pod
KV_CACHE_USAGE = 0.9        # fraction of the KV cache in use
TTFT_P95_SECONDS = 5.0
RATE = "5m"


def epp_pods(plan: Plan, server: ModelServer) -> str:
    """A regex of the endpoint picker's pod names: the llmd chart's Deployment (release name cut to
    40 characters + `-epp`), KServe's scheduler Deployment."""
    if plan.stack == "llmd":
        return f"{server.name[:40]}-epp-.*"
    from lightrail.kserve.compose import child_name

    return f"{child_name(server.name, '-kserve-router-scheduler')}-.*"


def pool_name(plan: Plan, server: ModelServer) -> str:
    """The InferencePool the picker reports on (`llm_d_epp_ready_endpoints{name=...}`)."""
    if plan.stack == "llmd":
        return server.pool
    from lightrail.kserve.compose import child_name

    return child_name(server.name, "-inference-pool")


def server_pods(plan: Plan, server: ModelServer) -> str:
    """A regex of the model server pods' names (llmd: modelservice `-decode`; kserve: `-kserve`)."""
    return f"{server.name}-{'decode' if plan.stack == 'llmd' else 'kserve'}-.*"


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, plan: Plan, server: ModelServer) -> dict:
    return {"alert": name, "expr": expr, "for": duration,
            "labels": {"severity": severity, "lightrail_pattern": plan.pattern.name, "lightrail_server": server.name},
            "annotations": {"summary": summary}}


def selectors(plan: Plan, server: ModelServer) -> dict[str, str]:
    """The label matchers of one model server's series: its picker's, its vLLM pods', its pool's."""
    ns = plan.namespace
    return {"epp": f'namespace="{ns}", pod=~"{epp_pods(plan, server)}"',
            "vllm": f'namespace="{ns}", pod=~"{server_pods(plan, server)}"',
            "pool": f'namespace="{ns}", name="{pool_name(plan, server)}"'}


def error_ratio(epp: str) -> str:
    return (f"sum(rate(llm_d_epp_request_error_total{{{epp}}}[{RATE}])) / "
            f"sum(rate(llm_d_epp_request_total{{{epp}}}[{RATE}]))")


def ttft_p95(vllm: str) -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{vllm}}}[{RATE}])))"


def server_rules(plan: Plan, server: ModelServer) -> list[dict]:
    """The alerts of one model server and its endpoint picker."""
    ns = plan.namespace
    sel = selectors(plan, server)
    epp, vllm, pool = sel["epp"], sel["vllm"], sel["pool"]
    ratio = error_ratio(epp)
    who = f"{server.name} in {ns}"
    return [
        _alert("LightrailEPPErrorRatioCritical", f"{ratio} > {ERROR_RATIO['critical']}", "5m", "critical",
               f"more than {ERROR_RATIO['critical']:.0%} of the requests to {who} fail", plan, server),
        _alert("LightrailEPPErrorRatioWarning",
               f"{ratio} > {ERROR_RATIO['warning']} and {ratio} <= {ERROR_RATIO['critical']}", "5m", "warning",
               f"more than {ERROR_RATIO['warning']:.0%} of the requests to {who} fail", plan, server),
        _alert("LightrailNoReadyEndpoints", f"max(llm_d_epp_ready_endpoints{{{pool}}}) < 1", "5m", "critical",
               f"the InferencePool of {who} has no ready model server", plan, server),
        _alert("LightrailEPPMetricsAbsent", f"absent(llm_d_epp_ready_endpoints{{{pool}}})", "10m", "warning",
               f"no metrics from the endpoint picker of {who}", plan, server),
        _alert("LightrailModelServerMetricsAbsent", f"absent(vllm:num_requests_waiting{{{vllm}}})", "10m", "warning",
               f"no metrics from the model servers of {who}", plan, server),
        _alert("LightrailQueueDepthHigh", f"max(vllm:num_requests_waiting{{{vllm}}}) > {QUEUE_DEPTH}", "5m", "warning",
               f"more than {QUEUE_DEPTH} requests wait in a model server of {who}", plan, server),
        _alert("LightrailKVCacheUsageHigh", f"max(vllm:kv_cache_usage_perc{{{vllm}}}) > {KV_CACHE_USAGE}", "10m",
               "warning", f"a model server of {who} uses more than {KV_CACHE_USAGE:.0%} of its KV cache", plan, server),
        _alert("LightrailPreemptions", f"sum(rate(vllm:num_preemptions_total{{{vllm}}}[{RATE}])) > 0", "10m", "warning",
               f"the model servers of {who} keep preempting requests (KV cache too small for the load)", plan, server),
        _alert("LightrailTTFTHigh", f"{ttft_p95(vllm)} > {TTFT_P95_SECONDS}", "10m", "warning",
               f"time to first token p95 of {who} is above {TTFT_P95_SECONDS:g} s", plan, server),
    ]


def rule_groups(plan: Plan) -> list[dict]:
    return [{"name": f"lightrail-{plan.namespace}-{s.name}", "rules": server_rules(plan, s)} for s in plan.servers]


def prometheus_rule(plan: Plan) -> dict:
    """The deployment's PrometheusRule (Prometheus Operator)."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": f"{plan.pattern.name}-alerts", "namespace": plan.namespace},
            "spec": {"groups": rule_groups(plan)}}


# The dashboard: per model server a row of these panels, scoped like its alerts. Each is
# (title, unit, PromQL from the server's selectors, legend, threshold line: an alert's threshold).
PANELS = [
    ("Requests / s by model (endpoint picker)", "reqps",
     lambda s: f"sum by (model_name) (rate(llm_d_epp_request_total{{{s['epp']}}}[{RATE}]))", "{{model_name}}", None),
    ("Errors / s by model (endpoint picker)", "reqps",
     lambda s: f"sum by (model_name) (rate(llm_d_epp_request_error_total{{{s['epp']}}}[{RATE}]))", "{{model_name}}",
     None),
    ("Error ratio (endpoint picker)", "percentunit", lambda s: error_ratio(s["epp"]), "errors", ERROR_RATIO["warning"]),
    ("Ready endpoints in the InferencePool", "short",
     lambda s: f"max(llm_d_epp_ready_endpoints{{{s['pool']}}})", "ready", None),
    ("Finished requests / s (model servers)", "reqps",
     lambda s: f"sum by (finished_reason) (rate(vllm:request_success_total{{{s['vllm']}}}[{RATE}]))",
     "{{finished_reason}}", None),
    ("Requests waiting per pod", "short", lambda s: f"max by (pod) (vllm:num_requests_waiting{{{s['vllm']}}})",
     "{{pod}}", QUEUE_DEPTH),
    ("KV cache usage per pod", "percentunit", lambda s: f"max by (pod) (vllm:kv_cache_usage_perc{{{s['vllm']}}})",
     "{{pod}}", KV_CACHE_USAGE),
    ("Preemptions / s", "short", lambda s: f"sum(rate(vllm:num_preemptions_total{{{s['vllm']}}}[{RATE}]))",
     "preemptions", None),
    ("Time to first token p95", "s", lambda s: ttft_p95(s["vllm"]), "p95", TTFT_P95_SECONDS),
]
PANEL_WIDTH, PANEL_HEIGHT = 8, 8    # three panels a row on Grafana's 24-column grid
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}   # the dashboard's datasource variable
DASHBOARD_LABEL = {"grafana_dashboard": "1"}   # the Grafana sidecar's default (grafana / kube-prometheus-stack charts)


def _panel(panel_id: int, x: int, y: int, spec: tuple, sel: dict[str, str]) -> dict:
    title, unit, query, legend, threshold = spec
    steps = [{"color": "green", "value": None}] + ([{"color": "red", "value": threshold}] if threshold else [])
    return {"type": "timeseries", "id": panel_id, "title": title, "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                                         "custom": {"thresholdsStyle": {"mode": "line" if threshold else "off"}}},
                            "overrides": []},
            "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": query(sel), "legendFormat": legend}]}


def dashboard_uid(plan: Plan) -> str:
    """`lightrail-<namespace>-<pattern>`, cut with a hash to Grafana's 40 characters."""
    uid = f"lightrail-{plan.namespace}-{plan.pattern.name}"
    return uid if len(uid) <= 40 else f"{uid[:29]}-{hashlib.sha256(uid.encode()).hexdigest()[:10]}"


def dashboard(plan: Plan) -> dict:
    """The deployment's Grafana dashboard (classic JSON model, the pinned schemaVersion)."""
    panels, y = [], 0
    for server in plan.servers:
        sel = selectors(plan, server)
        panels.append({"type": "row", "id": len(panels) + 1, "title": f"{server.name}: {server.model}",
                       "collapsed": False, "panels": [], "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
        y += 1
        for i, spec in enumerate(PANELS):
            panels.append(_panel(len(panels) + 1, (i % 3) * PANEL_WIDTH, y + (i // 3) * PANEL_HEIGHT, spec, sel))
        y += -(-len(PANELS) // 3) * PANEL_HEIGHT
    return {"uid": dashboard_uid(plan), "title": f"Lightrail {plan.pattern.name} ({plan.namespace})",
            "tags": ["lightrail", plan.pattern.name, plan.stack],
            "schemaVersion": plan.versions["grafana-dashboard"]["schemaVersion"],
            "editable": True, "graphTooltip": 1, "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
            "templating": {"list": [{"type": "datasource", "name": "datasource", "label": "Prometheus",
                                     "query": "prometheus"}]},
            "panels": panels}


def dashboard_configmap(plan: Plan) -> dict:
    """The dashboard as the Grafana sidecar loads it: a ConfigMap labelled grafana_dashboard=1."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"{plan.pattern.name}-dashboard", "namespace": plan.namespace,
                         "labels": dict(DASHBOARD_LABEL)},
            "data": {f"{dashboard_uid(plan)}.json": json.dumps(dashboard(plan), indent=1) + "\n"}}


def kserve_pod_monitors(plan: Plan) -> list[dict]:
    """PodMonitors for the pods KServe makes (it creates none): vLLM on :8000 (KServe's preset leaves
    the port unnamed; https when KServe's TLS is on) and the picker's named `metrics` port."""
    from lightrail.router import metrics_scheme

    out = []
    for s in plan.servers:
        workload = {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "llminferenceservice",
                    "kserve.io/component": "workload"}
        vllm_endpoint = {"targetPort": VLLM_PORT, "path": "/metrics", "scheme": metrics_scheme(plan) if s.source
                         else "http"}
        if vllm_endpoint["scheme"] == "https":   # KServe's self-signed serving certificate
            vllm_endpoint["tlsConfig"] = {"insecureSkipVerify": True}
        picker = {"app.kubernetes.io/name": s.name,
                  "app.kubernetes.io/component": "llminferenceservice-router-scheduler"}
        for name, labels, endpoint in ((f"{s.name}-model-server", workload, vllm_endpoint),
                                       (f"{s.name}-epp", picker, {"port": "metrics", "path": "/metrics"})):
            out.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
                        "metadata": {"name": name, "namespace": plan.namespace},
                        "spec": {"selector": {"matchLabels": labels}, "podMetricsEndpoints": [endpoint]}})
    return out
