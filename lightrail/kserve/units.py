"""Apply order for the kserve stack: one kustomize unit per model server and what it creates."""
from __future__ import annotations

from lightrail.plan import Plan, Unit


def units(plan: Plan) -> list[Unit]:
    from lightrail.kserve.compose import components, network_policies

    out = []
    for s in plan.servers:
        comps = components(plan, s)
        objects = {"NetworkPolicy": len(network_policies(plan, s))}
        if "model-routes" in comps:
            objects["HTTPRoute"] = 1
        objects["LLMInferenceService"] = 1
        source = "kustomize/base" + "".join(f" + components/{c}" for c in comps)
        out.append(Unit(s.name, "kustomize", source, f"serving.kserve.io/{plan.request.kserve_api}", objects))
    return out
