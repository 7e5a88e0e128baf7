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
from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.migrate.preflight import (Problem, gateway_fixed, gateway_programmed, gateway_splits, release, selectors_apart, source_present,
                                         target_selector)
from lightrail.ops import controllers
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


def test_the_kept_gateway_must_be_programmed_for_the_kserve_side():
    """KServe reports Ready only once a Gateway named in gateway.refs is Programmed; istiod reports a
    LoadBalancer Gateway with no address assigned (kind without a load balancer) as not Programmed."""
    gateway, _ = gateway_objects()
    assert gateway_programmed(gateway, migration("kserve", "llmd")) is None
    unaddressed = copy.deepcopy(gateway)
    (cond,) = [c for c in unaddressed["status"]["conditions"] if c["type"] == "Programmed"]
    cond.update(status="False", reason="AddressNotAssigned", message="Assigned to service(s) x, but failed to "
                "assign to all requested addresses")
    for source, to in (("kserve", "llmd"), ("llmd", "kserve")):
        assert gateway_programmed(unaddressed, migration(source, to)) == Problem(
            "Gateway kserve/kserve-ingress-gateway is not Programmed (AddressNotAssigned: Assigned to service(s) x, "
            "but failed to assign to all requested addresses); KServe waits for it once the kserve side is served "
            "through the front route", "give the Gateway an address (a load balancer for its Service, or the gateway "
            "controller's ClusterIP option) until it reports Programmed")
    assert "no Programmed condition" in gateway_programmed({"status": {}}, migration("llmd", "kserve")).what


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


def istiod(tag: str, revision: str = "") -> dict:
    """istiod's Deployment as Istio's own istio-discovery chart (the pinned module's, built by setup) renders it."""
    try:
        chart = controllers.installed("istio") / "manifests/charts/istio-control/istio-discovery"
    except LightrailError as err:
        pytest.skip(str(err))
    out = tools.run("helm", "template", "istiod", str(chart), "-n", "istio-system", "--set", "global.hub=docker.io/istio",
                    "--set", f"global.tag={tag}", "--set", f"revision={revision}",
                    "--show-only", "templates/deployment.yaml").stdout
    (deployment,) = [d for d in yaml.safe_load_all(out) if d]
    return deployment


def test_istio_releases_order_pre_releases_before_the_release_and_ignore_the_variant():
    assert release("1.31.0-rc.0") < release("1.31.0-rc.1") < release("1.31.0") < release("1.31.1")
    assert release("1.30.4") < release("1.30.5") < release("1.31.0-alpha.0") < release("1.31.0-beta.2")
    assert release("1.29.2-distroless") == release("1.29.2") and release("1.29") == release("1.29.0")
    assert release("master-2026-08-22T19-00-53") is None and release("latest") is None


def test_an_istiod_release_cut_before_the_weighted_pool_fix_is_refused_naming_the_issue():
    """patterns/migration.yaml `without_fix`: istio#61594 (one empty pool answers a weighted rule 503) is
    fixed after 1.29.6, 1.30.4 and 1.31.0-rc.0; minors before 1.29 got no backport."""
    gateway, classes = gateway_objects()
    problem = gateway_fixed(gateway, classes["istio"], [istiod("1.29.2")])
    assert problem == Problem(
        "istiod 1.29.2 (istio-system/istiod) lacks the fix for istio#61594: one empty InferencePool in a weighted "
        "rule answers the whole rule 503",
        "upgrade istiod to a patch release that carries it (1.29: after 1.29.6, 1.30: after 1.30.4, 1.31: after "
        "1.31.0-rc.0; 1.29 or later) before migrating (patterns/migration.yaml)")
    for tag in ("1.29.6", "1.30.4-distroless", "1.31.0-rc.0", "1.31.0-beta.1", "1.28.9", "1.27.0"):
        assert gateway_fixed(gateway, classes["istio"], [istiod(tag)]) is not None, tag
    for tag in ("1.29.7", "1.29.9", "1.30.5", "1.31.0-rc.1", "1.31.0", "1.32.0", "master-2026-09-30"):
        assert gateway_fixed(gateway, classes["istio"], [istiod(tag)]) is None, tag


def test_the_gateways_own_istio_revision_is_judged_and_no_istiod_in_the_cluster_is_nothing_to_judge():
    gateway, classes = gateway_objects()
    both = [istiod("1.30.4"), istiod("1.30.5", revision="canary")]
    assert gateway_fixed(gateway, classes["istio"], both) is not None             # istio.io/rev default: 1.30.4
    canary = copy.deepcopy(gateway)
    canary["metadata"].setdefault("labels", {})["istio.io/rev"] = "canary"
    assert gateway_fixed(canary, classes["istio"], both) is None
    other = copy.deepcopy(gateway)
    other["metadata"].setdefault("labels", {})["istio.io/rev"] = "prod-stable"    # a revision tag: every istiod
    assert gateway_fixed(other, classes["istio"], both) is not None
    assert gateway_fixed(gateway, classes["istio"], []) is None                   # istiod outside the cluster
    assert gateway_fixed(gateway, gateway_class("networking.gke.io/gateway"), [istiod("1.29.2")]) is None
