"""Apply order for the kserve stack: the body-based router (multimodel), then one kustomize unit
per model server, and what each creates."""
from __future__ import annotations

from lightrail.plan import Plan, Unit

# kustomize/body-based-routing (+ its gateway/ EnvoyFilter, in KServe's gateway namespace)
BBR = {"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1, "Service": 1, "DestinationRule": 1,
       "EnvoyFilter": 1, "NetworkPolicy": 1}


def units(plan: Plan) -> list[Unit]:
    from lightrail.kserve.compose import components, network_policies

    out = []
    if plan.tls:   # our HTTPS Gateway, which the LLMInferenceServices' routes attach to
        out.append(Unit("gateway", "kustomize", "generated", "gateway.networking.k8s.io/v1", {"Gateway": 1}))
    if plan.body_router:
        image = plan.versions["images"]["bbr"]
        out.append(Unit(f"{plan.pattern.name}-bbr", "kustomize", "kustomize/body-based-routing",
                        image.rsplit(":", 1)[-1], BBR))
    for s in plan.servers:
        comps = components(plan, s)
        objects = {"NetworkPolicy": len(network_policies(plan, s)), "LLMInferenceService": 1}
        source = "kustomize/base" + "".join(f" + components/{c}" for c in comps)
        out.append(Unit(s.name, "kustomize", source, f"serving.kserve.io/{plan.request.kserve_api}", objects))
    if plan.request.monitoring != "none":   # a PodMonitor for the model servers and one for the picker, per model
        out.append(Unit("monitoring", "kustomize", "generated", "monitoring.coreos.com/v1",
                        {"PodMonitor": 2 * len(plan.servers), "PrometheusRule": 1, "ConfigMap": 1}))
    return out
