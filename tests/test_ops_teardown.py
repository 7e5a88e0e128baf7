"""Teardown planning from recorded cluster objects (pure: what to uninstall, what to delete by name)."""
from __future__ import annotations

from lightrail.ops import teardown as td
from lightrail.ops.objects import meta, ref
from lightrail.ops.target import Target
from tests.test_ops_readiness import load

TARGET = Target("kind-test", "lightrail", "--kube-context")
OBJECTS = load("ops/routing.yaml", "ops/workloads.yaml")


def test_children_of_a_controller_go_with_their_owner():
    """Mutant M7 (`_controlled` -> always False): KServe's pods carry our labels but a ReplicaSet
    controls them; deleting them by name only makes the ReplicaSet start new ones. The plan deletes
    the LLMInferenceService alone and the garbage collector removes what it created."""
    found = td.select(OBJECTS, "lightrail", pattern="baseline", stack="kserve")
    pods = [o for o in found if o["kind"] == "Pod"]
    assert len(pods) == 2 and all(r.get("controller") for p in pods for r in meta(p)["ownerReferences"])
    plan = td.plan_teardown(found, [], TARGET)
    (delete,) = plan.steps
    assert [ref(o) for o in delete.objects] == ["LLMInferenceService lightrail/baseline-qwen2-5-0-5b-instruct"]
    assert plan.removes == ["LLMInferenceService lightrail/baseline-qwen2-5-0-5b-instruct"]
    # a labelled object with a non-controlling owner reference is ours to delete
    loose = pods[0] | {"metadata": {**meta(pods[0]), "ownerReferences": [
        {**meta(pods[0])["ownerReferences"][0], "controller": False}]}}
    (delete,) = td.plan_teardown([found[0], loose], [], TARGET).steps
    assert [o["kind"] for o in delete.objects] == ["LLMInferenceService", "Pod"]
