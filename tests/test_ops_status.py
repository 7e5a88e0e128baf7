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


def test_rows_of_every_deployment_from_what_the_cluster_lists():
    """What `flows.status` hands `aggregate`: the labelled objects and pods of every kind it lists (the
    listing itself runs against the real API server in tests/e2e/test_deploy.py)."""
    live = load("ops/workloads.yaml", "ops/routing.yaml")
    helm_gateway = copy.deepcopy(load("cluster/gateway-programmed.yaml")[0])
    helm_gateway["metadata"]["labels"].update({"lightrail.dev/accel": "tpu", "lightrail.dev/pattern": "caching"})
    pods = [o for o in live if o["kind"] == "Pod"]
    rows = aggregate([o for o in live if o["kind"] != "Pod"] + [helm_gateway], pods, NOW)
    summary = {(r.pattern, r.stack): r for r in rows}
    assert sorted(summary) == [("baseline", "kserve"), ("baseline", "llmd"), ("caching", "llmd"), ("moe", "llmd")]
    caching = summary[("caching", "llmd")]
    assert (caching.accel, caching.ready, caching.desired) == ("tpu", 2, 5)   # model servers: 1/3 (TPU) + 1/1 + 0/1
    assert caching.endpoint == "http://34.118.10.20" and caching.age == "3h30m"
    kserve = summary[("baseline", "kserve")]
    assert (kserve.accel, kserve.models, kserve.ready, kserve.desired) == ("cpu", ["Qwen/Qwen2.5-0.5B-Instruct"], 1, 2)
    assert kserve.endpoint == "http://34.118.10.30/lightrail/baseline-qwen2-5-0-5b-instruct"
    assert kserve.last_condition == ("LLMInferenceService baseline-qwen2-5-0-5b-instruct: Ready=False "
                                     "(MinimumReplicasUnavailable)")
    assert aggregate([], [], NOW) == []
