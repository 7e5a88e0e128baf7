"""Apply order for the kserve stack: kustomize units and what each one creates."""
from __future__ import annotations

from lightrail.plan import Plan, Unit


def units(plan: Plan) -> list[Unit]:
    api = plan.request.kserve_api
    return [
        Unit("network-policies", "kustomize", "kustomize/components/network-policies", api,
             {"NetworkPolicy": 1 + len(plan.servers)}),
        *(Unit(s.name, "kustomize", "kustomize/base", api, {"LLMInferenceService": 1}) for s in plan.servers),
    ]
