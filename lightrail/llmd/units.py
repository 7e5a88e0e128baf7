"""Apply order for the llmd stack: one helm release per step, and what each one renders.

The object counts are those of the pinned upstream charts with Lightrail's values (tests
render the real charts and compare); provider-specific objects depend on the gateway.
"""
from __future__ import annotations

import functools
from dataclasses import replace

import yaml

from lightrail.aliases import REWRITE_KIND
from lightrail.llmd.values import OWN_CHARTS, bbr_chart
from lightrail.plan import Plan, Unit

INFRA = {"Gateway": 1}
BBR = {"body-based-routing": {"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1, "Service": 1},
       "agentgateway-body-routing": {"AgentgatewayPolicy": 1}}
ROUTER = {"ServiceAccount": 1, "Role": 2, "RoleBinding": 2, "ConfigMap": 1, "Service": 1, "Deployment": 1,
          "HTTPRoute": 1, "InferencePool": 1}
# --monitoring=prometheus: the router chart's ServiceMonitor and its metrics auth (token Secret,
# ClusterRole/Binding for TokenReviews), modelservice's PodMonitor, our chart's PrometheusRule and
# Grafana dashboard ConfigMap.
MONITORING = {"router": {"ServiceMonitor": 1, "Secret": 1, "ClusterRole": 1, "ClusterRoleBinding": 1},
              "ms": {"PodMonitor": 1}, "monitoring": {"PrometheusRule": 1, "ConfigMap": 1}}
PROVIDER_EXTRAS = {
    "istio": {"infra": {"ConfigMap": 1, "Telemetry": 1}, "bbr": {"DestinationRule": 1, "EnvoyFilter": 1},
              "router": {"DestinationRule": 1}},
    "gke": {"bbr": {"GCPRoutingExtension": 1, "HealthCheckPolicy": 1},
            "router": {"GCPBackendPolicy": 1, "HealthCheckPolicy": 1}},
    "agentgateway": {"infra": {"AgentgatewayParameters": 1}},
}


@functools.lru_cache(maxsize=None)
def _own_chart_version(name: str) -> str:
    return str(yaml.safe_load((OWN_CHARTS / name / "Chart.yaml").read_text())["version"])


def units(plan: Plan) -> list[Unit]:
    charts = plan.versions["charts"]
    extras = PROVIDER_EXTRAS.get(plan.gateway.provider, {})

    monitored = plan.request.monitoring != "none"

    def unit(name, chart, base, role):
        version = charts[chart]["version"] if chart in charts else _own_chart_version(chart)
        return Unit(name, "helm", chart, version,
                    {**base, **extras.get(role, {}), **(MONITORING.get(role, {}) if monitored else {})})

    out = [] if plan.gateway.external else [unit(f"{plan.pattern.name}-infra", "llm-d-infra", INFRA, "infra")]
    if plan.body_router:
        chart = bbr_chart(plan)
        out.append(unit(f"{plan.pattern.name}-bbr", chart, BBR[chart], "bbr"))
    for s in plan.servers:
        router = unit(s.name, "llm-d-router-gateway", ROUTER, "router")
        if plan.gateway.external:   # served through Lightrail's front route: the chart makes no route
            router = replace(router, objects={k: v for k, v in router.objects.items() if k != "HTTPRoute"})
        out.append(router)
        workload = "LeaderWorkerSet" if s.multinode else "Deployment"
        extra = {REWRITE_KIND: 1} if s.aliases else {}   # beside the servers (extraObjects): aliases, weights claim
        if s.weights and s.weights.claim and s.weights.kind == "pvc-cache":
            extra["PersistentVolumeClaim"] = 1
        out.append(unit(f"{s.name}-ms", "llm-d-modelservice", {"ServiceAccount": 1, workload: 1, **extra}, "ms"))
    if monitored:
        out.append(unit(f"{plan.pattern.name}-monitoring", "lightrail-monitoring", {}, "monitoring"))
    return out
