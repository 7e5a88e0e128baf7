"""`invoke status` rows from recorded objects (pure aggregation over what the cluster lists)."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

from lightrail.ops.objects import labels
from lightrail.ops.status import aggregate
from tests.test_ops_readiness import load

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
LLMD = [o for o in load("ops/workloads.yaml", "ops/routing.yaml") if labels(o).get("lightrail.dev/stack") == "llmd"]


def endpoint_picker(model_server: dict) -> dict:
    """The EPP Deployment the llm-d-router gateway chart renders next to a model server: labelled by
    Lightrail's post-renderer like every object, but its pods are not model servers."""
    name = model_server["metadata"]["name"].removesuffix("-decode")
    epp = copy.deepcopy(model_server)
    epp["metadata"].update(name=f"{name}-epp", uid=f"uid-{name}-epp")
    epp["metadata"]["annotations"]["meta.helm.sh/release-name"] = name
    selector = {"llm-d-router-gateway": f"{name}-epp"}
    epp["spec"] = {"replicas": 1, "selector": {"matchLabels": selector}, "template": {
        "metadata": {"labels": selector},
        "spec": {"containers": [{"name": "epp", "image": "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0",
                                 "args": ["--pool-name", name, "--pool-namespace", "lightrail"]}]}}}
    epp["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                     "updatedReplicas": 1}
    return epp


def test_endpoint_pickers_are_not_counted_as_model_servers():
    """Mutant M15 (drop the endpoint-picker filter): each model has an EPP Deployment with our labels;
    counting it would add a model named after the EPP and a ready replica that serves nothing."""
    decodes = [o for o in LLMD if o["kind"] == "Deployment" and labels(o)["lightrail.dev/pattern"] == "caching"]
    assert len(decodes) == 3
    rows = aggregate(LLMD + [endpoint_picker(d) for d in decodes], [], NOW)
    (caching,) = [r for r in rows if r.pattern == "caching"]
    assert (caching.ready, caching.desired) == (2, 5)   # model servers: 1/3 (TPU) + 1/1 + 0/1
    assert caching.models == sorted(caching.models) and len(caching.models) == 3
    assert not any("epp" in m for m in caching.models)
