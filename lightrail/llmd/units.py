"""Apply order for the llmd stack: one helm release per step, what each one creates."""
from __future__ import annotations

from lightrail.plan import Plan, Unit


def units(plan: Plan) -> list[Unit]:
    charts = plan.versions["charts"]
    out = [Unit(f"{plan.pattern.name}-infra", "helm", "llm-d-infra", charts["llm-d-infra"]["version"],
                {"Gateway": 1})]
    for s in plan.servers:
        out.append(Unit(f"{s.name}-router", "helm", "llm-d-router-gateway",
                        charts["llm-d-router-gateway"]["version"],
                        {"InferencePool": 1, "Deployment": 1, "Service": 1, "HTTPRoute": 1}))
        workload = "LeaderWorkerSet" if s.multinode else "Deployment"
        out.append(Unit(f"{s.name}-ms", "helm", "llm-d-modelservice", charts["llm-d-modelservice"]["version"],
                        {workload: 1}))
    return out
