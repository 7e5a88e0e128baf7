"""Preflight: the reasons `invoke migrate` refuses before any change, judged on recorded objects.

Each check returns the problem the user reads (what is wrong and the fix), so these tests assert
the whole Problem. The cluster reads around them (run.preflight) run in tests/e2e/test_migrate.py.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lightrail.migrate.plan import plan_migration
from lightrail.migrate.preflight import Problem, gateway_splits, selectors_apart, source_present, target_selector
from lightrail.migrate.routes import client_rules
from lightrail.plan import Request, build_plan
from lightrail.smoke.discovery import server_pod_labels

FIXTURES = Path(__file__).parent / "fixtures"
ROUTE = {"spec": {"parentRefs": [{"kind": "Gateway", "name": "kserve-ingress-gateway", "namespace": "kserve"}],
                  "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}}
REF = ("kserve", "kserve-ingress-gateway")


def load(path):
    return list(yaml.safe_load_all((FIXTURES / path).read_text()))


def gateway_objects():
    objects = load("ops/gateways.yaml")
    classes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "GatewayClass"}
    gateway = next(o for o in objects if o["kind"] == "Gateway" and o["metadata"]["name"] == "kserve-ingress-gateway")
    return gateway, classes


def gateway_class(controller):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "x"},
            "spec": {"controllerName": controller}}


def migration(source="llmd", to="kserve", pattern="caching"):
    plan = build_plan(Request(pattern=pattern, accel="sim", stack=source, namespace="lightrail"))
    return plan_migration(plan, to, REF, {s.name: client_rules(ROUTE) for s in plan.servers},
                          {s.name: ROUTE["spec"]["parentRefs"] for s in plan.servers})


def recorded_pod(name):
    (pod,) = load(f"cluster/{name}.yaml")
    return pod


def test_a_gateway_whose_controller_splits_between_pools_passes():
    gateway, classes = gateway_objects()
    assert gateway_splits(gateway, classes["istio"], REF) is None
    assert gateway_splits(gateway, classes["gke-l7-regional-external-managed"], REF) is None
    assert gateway_splits(gateway, gateway_class("agentgateway.dev/agentgateway"), REF) is None


def test_a_missing_gateway_or_gateway_class_is_named_with_its_fix():
    gateway, _ = gateway_objects()
    assert gateway_splits(None, None, REF) == Problem("Gateway kserve/kserve-ingress-gateway does not exist",
                                                      "deploy the source first (`invoke deploy`)")
    assert gateway_splits(gateway, None, REF) == Problem(
        "GatewayClass istio of Gateway kserve-ingress-gateway does not exist", "install its gateway controller")


def test_a_controller_not_known_to_split_is_refused_naming_the_ones_that_do():
    gateway, _ = gateway_objects()
    assert gateway_splits(gateway, gateway_class("example.com/gateway"), REF) == Problem(
        "gateway controller example.com/gateway is not known to split traffic between InferencePools",
        "known: istio.io/gateway-controller, networking.gke.io/gateway, agentgateway.dev/agentgateway "
        "(patterns/migration.yaml)")


@pytest.mark.parametrize("controller,note", [
    ("kgateway.dev/kgateway", "weighted InferencePools return 503 (kgateway#11667, open)"),
    ("gateway.envoyproxy.io/gatewayclass-controller", "Envoy Gateway sends traffic to weight-0 backends"),
])
def test_a_controller_known_not_to_split_is_refused_with_the_reason(controller, note):
    gateway, _ = gateway_objects()
    problem = gateway_splits(gateway, gateway_class(controller), REF)
    assert problem.what.startswith(f"gateway controller {controller} cannot split traffic between InferencePools: {note}")
    assert problem.fix == "migrate behind a Gateway of istio, GKE or agentgateway"


@pytest.mark.parametrize("source,to,pool", [("llmd", "kserve", "caching-qwen2-5-3b-instruct"),
                                            ("kserve", "llmd", "caching-qwen2-5-3b-instruct-inference-pool")])
def test_the_sources_pool_must_exist_under_the_name_its_stack_gives_it(source, to, pool):
    m = migration(source, to)
    assert source_present(m, {pool: {"kind": "InferencePool", "metadata": {"name": pool}}}) == []
    assert source_present(m, {pool: None}) == source_present(m, {}) == [Problem(
        f"InferencePool lightrail/{pool} of the source ({source}, model Qwen/Qwen2.5-3B-Instruct) does not exist",
        "pass the --pattern, --accel and --model the source was deployed with (see `invoke status`)")]


def test_recorded_pods_of_each_stack_are_not_selected_by_the_other_sides_pool():
    """The real labels: llm-d-modelservice's pod beside KServe's workload pod, either direction."""
    llmd_pod, kserve_pod = recorded_pod("pod-llmd-decode"), recorded_pod("pod-kserve-workload")
    assert selectors_apart(migration("llmd", "kserve"), [llmd_pod], [kserve_pod["metadata"]["labels"]]) == []
    assert selectors_apart(migration("kserve", "llmd"), [kserve_pod], [llmd_pod["metadata"]["labels"]]) == []


def test_source_pods_the_target_pool_would_select_are_named_up_to_three():
    m = migration("llmd", "kserve")
    crossing = []
    for i in range(4):
        pod = copy.deepcopy(recorded_pod("pod-llmd-decode"))
        pod["metadata"]["name"] = f"src-{i}"
        pod["metadata"]["labels"].update(target_selector(m, m.target.servers[0]))
        crossing.append(pod)
    assert selectors_apart(m, [recorded_pod("pod-llmd-decode"), *crossing], []) == [
        Problem("the target pool caching-qwen2-5-3b-instruct-inference-pool would select source pods (src-0, src-1, src-2)")]


def test_target_pods_the_source_pool_would_select_are_refused():
    m = migration("kserve", "llmd")
    kserve_labels = recorded_pod("pod-kserve-workload")["metadata"]["labels"]
    assert selectors_apart(m, [], [recorded_pod("pod-llmd-decode")["metadata"]["labels"], dict(kserve_labels)]) == [
        Problem("the source pool caching-qwen2-5-3b-instruct-inference-pool would select the target's pods")]


def test_a_pool_selects_a_pod_only_when_every_selector_label_matches():
    """One label of a selector missing, or with another value, is no match (either pool)."""
    m = migration("llmd", "kserve")
    selector = target_selector(m, m.target.servers[0])
    assert len(selector) > 1
    near = []
    for key in selector:
        missing = copy.deepcopy(recorded_pod("pod-llmd-decode"))
        missing["metadata"]["labels"].update({k: v for k, v in selector.items() if k != key})
        other = copy.deepcopy(missing)
        other["metadata"]["labels"][key] = selector[key] + "-other"
        near += [missing, other]
    source = server_pod_labels(m.source, m.source.servers[0])
    assert len(source) > 1
    near_target = [{**{k: v for k, v in source.items() if k != key}, **extra}
                   for key in source for extra in ({}, {key: source[key] + "-other"})]
    assert selectors_apart(m, near, near_target) == []
