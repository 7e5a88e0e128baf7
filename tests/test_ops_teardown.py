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


def labelled(kind, name, namespace="lightrail", pattern="caching", stack="llmd", api="v1", **meta_extra):
    metadata = {"name": name, "namespace": namespace,
                "labels": {"lightrail.dev/pattern": pattern, "lightrail.dev/stack": stack}, **meta_extra}
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


def test_the_label_selector_sent_to_the_cluster():
    assert td.selector() == "lightrail.dev/stack"
    assert td.selector("caching") == "lightrail.dev/pattern=caching,lightrail.dev/stack"
    assert td.selector("caching", "kserve") == "lightrail.dev/pattern=caching,lightrail.dev/stack=kserve"
    assert td.selector(stack="llmd") == "lightrail.dev/stack=llmd"


def test_select_takes_the_deployment_and_what_points_into_its_namespace():
    ours = labelled("ConfigMap", "a")
    other_pattern = labelled("ConfigMap", "b", pattern="baseline")
    other_stack = labelled("ConfigMap", "c", stack="kserve")
    elsewhere = labelled("ConfigMap", "d", namespace="team-b")
    pointing = labelled("EnvoyFilter", "bbr", namespace="kserve", api="networking.istio.io/v1alpha3")
    pointing["spec"] = {"configPatches": [{"patch": {"value": {"cluster": "outbound|9004||caching-bbr.lightrail.svc"}}}]}
    unlabelled = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e", "namespace": "lightrail"}}
    cluster_scoped = labelled("ClusterRole", "f", namespace=None)
    objects = [ours, other_pattern, other_stack, elsewhere, pointing, unlabelled, cluster_scoped]
    names = lambda found: [meta(o)["name"] for o in found]  # noqa: E731
    assert names(td.select(objects, "lightrail", "caching", "llmd")) == ["a", "bbr"]
    assert names(td.select(objects, "lightrail")) == ["a", "b", "c", "bbr"]
    assert names(td.select(objects, "team-b")) == ["d"]
    assert td.leftovers(objects, "lightrail", "caching", "llmd") == ["ConfigMap lightrail/a",
                                                                     "EnvoyFilter kserve/bbr"]


def test_orphan_releases_are_ours_by_name_and_chart():
    releases = [{"name": "caching-infra", "chart": "llm-d-infra-v1.4.0"},
                {"name": "caching-web", "chart": "nginx-18.1.0"},
                {"name": "baseline-qwen2-5-3b-instruct-ms", "chart": "llm-d-modelservice-v0.4.12"},
                {"name": "team-infra", "chart": "llm-d-infra-v1.4.0"},
                {"name": "caching-x"}]
    assert td.orphan_releases(releases, "caching", ["baseline", "caching"]) == ["caching-infra"]
    assert td.orphan_releases(releases, None, ["baseline", "caching"]) == ["caching-infra",
                                                                          "baseline-qwen2-5-3b-instruct-ms"]


def test_teardown_steps_uninstall_releases_then_delete_the_rest_in_order():
    release = {"annotations": {"meta.helm.sh/release-name": "caching-infra"}}
    kept = {"annotations": {"meta.helm.sh/release-name": "caching-infra", "helm.sh/resource-policy": "keep"}}
    found = [labelled("PersistentVolumeClaim", "weights"), labelled("Deployment", "gw", **release),
             labelled("Secret", "lightrail-hf-token"), labelled("ConfigMap", "kept", **kept),
             labelled("InferenceObjective", "obj", api="llm-d.ai/v1alpha1"),
             labelled("LLMInferenceService", "svc", api="serving.kserve.io/v1alpha2")]
    plan = td.plan_teardown(found, ["caching-qwen2-5-3b-instruct-ms"], TARGET, timeout=120)
    uninstall, delete = plan.steps
    assert uninstall.title == "uninstall helm release(s) caching-infra, caching-qwen2-5-3b-instruct-ms"
    assert (uninstall.tool, uninstall.timeout) == ("helm", 150)
    assert uninstall.args == ("--kube-context=kind-test", "uninstall", "caching-infra", "caching-qwen2-5-3b-instruct-ms",
                              "--namespace", "lightrail", "--wait", "--timeout=120s", "--ignore-not-found")
    assert delete.title == "delete 5 labelled object(s)" and delete.timeout == 150
    assert [o["kind"] for o in delete.objects] == ["LLMInferenceService", "InferenceObjective", "Secret", "ConfigMap",
                                                   "PersistentVolumeClaim"]
    assert "--timeout=120s" in delete.args
    assert "--wait=false" in delete.args   # teardown waits itself and names what a finalizer holds (tests/e2e)
    assert plan.removes[:2] == ["helm release caching-infra", "helm release caching-qwen2-5-3b-instruct-ms"]
    assert len(plan.removes) == 2 + len(found) and plan.kept == []
    keeping = td.plan_teardown(found, [], TARGET, keep_pvcs=True)
    assert keeping.kept == ["PersistentVolumeClaim lightrail/weights"]
    assert "PersistentVolumeClaim" not in [o["kind"] for o in keeping.steps[-1].objects]
    assert td.leftovers(found, "lightrail", keep_pvcs=True) == [ref(o) for o in found[1:]]
    assert td.leftovers(found, "lightrail") == [ref(o) for o in found]
