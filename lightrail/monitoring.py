"""Monitoring: scrape targets and one PrometheusRule per deployment, the same alerts on both stacks.

Pure values from the plan. The llmd stack scrapes through the charts (llm-d-modelservice
`decode.monitoring.podmonitor`, llm-d-router-gateway `router.monitoring`); the kserve stack gets
PodMonitors from us. Metric names are the pinned upstreams': the endpoint picker's `llm_d_epp_*`
(llm-d-router v0.10.0 pkg/epp/metrics) and vLLM's `vllm:*` (checked against a real vLLM's /metrics
in tests/test_monitoring.py). docs/monitoring.md lists the alerts.
"""
from __future__ import annotations

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


def server_rules(plan: Plan, server: ModelServer) -> list[dict]:
    """The alerts of one model server and its endpoint picker."""
    ns = plan.namespace
    epp = f'namespace="{ns}", pod=~"{epp_pods(plan, server)}"'
    vllm = f'namespace="{ns}", pod=~"{server_pods(plan, server)}"'
    pool = f'namespace="{ns}", name="{pool_name(plan, server)}"'
    ratio = (f"sum(rate(llm_d_epp_request_error_total{{{epp}}}[{RATE}])) / "
             f"sum(rate(llm_d_epp_request_total{{{epp}}}[{RATE}]))")
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
        _alert("LightrailTTFTHigh",
               f"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{vllm}}}[{RATE}])))"
               f" > {TTFT_P95_SECONDS}", "10m", "warning",
               f"time to first token p95 of {who} is above {TTFT_P95_SECONDS:g} s", plan, server),
    ]


def rule_groups(plan: Plan) -> list[dict]:
    return [{"name": f"lightrail-{plan.namespace}-{s.name}", "rules": server_rules(plan, s)} for s in plan.servers]


def prometheus_rule(plan: Plan) -> dict:
    """The deployment's PrometheusRule (Prometheus Operator)."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": f"{plan.pattern.name}-alerts", "namespace": plan.namespace},
            "spec": {"groups": rule_groups(plan)}}


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
