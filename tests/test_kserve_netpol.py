"""The kserve stack's NetworkPolicies, evaluated against the pods KServe really creates.

KServe v0.20 labels the pods of an LLMInferenceService itself (pkg/constants, workload_*.go,
scheduler.go); the policies only work if their selectors match those labels. A small evaluator
applies Kubernetes NetworkPolicy semantics (a pod is isolated for a direction once any policy
selects it; then some rule must allow the peer and port) to the flows each pattern needs.

A connection through a Service has two ports: the Service's, which the client dials, and the
endpoint's behind it (the API server: Service port 443, endpoints on 6443 on kind and OpenShift,
443 on GKE). CNIs differ in which one an egress rule sees: most (Calico, Cilium, GKE Dataplane V2)
match after the Service's DNAT, on the endpoint port; others match the Service port. A flow counts
as allowed only when it is allowed under both; ingress always sees the endpoint port.
"""
import functools

import pytest

from lightrail.plan import Request, build_plan
from lightrail.render import render

NS = "lightrail"
EXTERNAL = None   # Hugging Face, the API server: outside the cluster's pods
API_SERVER_ENDPOINT_PORTS = (443, 6443)   # behind the `kubernetes` Service's port 443: GKE; kind, OpenShift


def pod(name, namespace=NS, ns_labels=None, **labels):
    ns_labels = {"kubernetes.io/metadata.name": namespace, **(ns_labels or {})}
    return {"name": name, "namespace": namespace, "ns_labels": ns_labels, "labels": labels}


def kserve_pods(server: str) -> dict:
    """The pods KServe v0.20 creates for one LLMInferenceService, with its labels."""
    common = {"app.kubernetes.io/name": server, "app.kubernetes.io/part-of": "llminferenceservice"}
    comp = "app.kubernetes.io/component"
    return {
        "workload": pod("workload", **common, **{comp: "llminferenceservice-workload", "kserve.io/component": "workload",
                                                   "llm-d.ai/role": "both"}),
        "leader": pod("leader", **common, **{comp: "llminferenceservice-workload-leader",
                                               "kserve.io/component": "workload", "llm-d.ai/role": "both"}),
        "worker": pod("worker", **common, **{comp: "llminferenceservice-workload-worker"}),
        "scheduler": pod("scheduler", **common, **{comp: "llminferenceservice-router-scheduler"}),
    }


GATEWAY = pod("gateway", "kserve", **{"gateway.networking.k8s.io/gateway-name": "kserve-ingress-gateway"})
DNS = pod("coredns", "kube-system", **{"k8s-app": "kube-dns"})
PROMETHEUS = pod("prometheus", "monitoring", ns_labels={"lightrail.dev/metrics": "true"}, app="prometheus")
STRANGER = pod("stranger", "other", app="curl")
NEIGHBOUR = pod("neighbour", NS, app="something-else")


def _match_selector(selector, labels) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer, policy_ns, other) -> bool:
    if "ipBlock" in peer:
        return other is EXTERNAL
    if other is EXTERNAL:
        return False
    if "namespaceSelector" in peer:
        if not _match_selector(peer["namespaceSelector"], other["ns_labels"]):
            return False
    elif other["namespace"] != policy_ns:
        return False
    return _match_selector(peer.get("podSelector", {}), other["labels"])


def _port_matches(rule, port, protocol) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)


def _direction_allows(policies, subject, other, port, protocol, direction) -> bool:
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if p["metadata"]["namespace"] == subject["namespace"]
                 and direction in p["spec"].get("policyTypes", ["Ingress"])
                 and _match_selector(p["spec"]["podSelector"], subject["labels"])]
    if not selecting:
        return True   # not isolated in this direction
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            if not _port_matches(rule, port, protocol):
                continue
            if peers not in rule or any(_peer_matches(peer, policy["metadata"]["namespace"], other)
                                        for peer in rule[peers]):
                return True
    return False


def allowed(policies, src, dst, port, protocol="TCP", endpoint_port=None) -> bool:
    """Whether NetworkPolicies let src open a connection to dst:port (EXTERNAL = outside the cluster).

    `port` is what src dials; `endpoint_port` the port a Service translates it to (default: the
    same). Egress must allow both (CNIs match one or the other), ingress the endpoint port.
    """
    target = port if endpoint_port is None else endpoint_port
    egress = src is EXTERNAL or all(_direction_allows(policies, src, dst, p, protocol, "Egress")
                                    for p in dict.fromkeys((port, target)))
    ingress = dst is EXTERNAL or _direction_allows(policies, dst, src, target, protocol, "Ingress")
    return egress and ingress


def reaches_api_server(policies, src) -> bool:
    """src reaches the API server through the `kubernetes` Service on every kind of cluster."""
    return all(allowed(policies, src, EXTERNAL, 443, endpoint_port=p) for p in API_SERVER_ENDPOINT_PORTS)


def test_the_evaluator_needs_a_flow_allowed_on_the_service_and_the_endpoint_port():
    """The evaluator itself: egress allowed on 443 only passes CNIs that match Service ports and fails
    on kind (endpoint 6443) for the others; allowed on 6443 only, the other way round."""
    subject = pod("picker", app="picker")

    def egress_on(*ports):
        return [{"metadata": {"namespace": NS}, "spec": {"podSelector": {"matchLabels": {"app": "picker"}},
                                                          "policyTypes": ["Egress"],
                                                          "egress": [{"ports": [{"port": p} for p in ports]}]}}]
    assert allowed(egress_on(443), subject, EXTERNAL, 443)                          # GKE: no translation
    assert not allowed(egress_on(443), subject, EXTERNAL, 443, endpoint_port=6443)  # kind, after DNAT
    assert not allowed(egress_on(6443), subject, EXTERNAL, 443, endpoint_port=6443)  # Service-port CNIs
    assert reaches_api_server(egress_on(443, 6443), subject)
    assert not reaches_api_server(egress_on(443), subject) and not reaches_api_server(egress_on(6443), subject)


@functools.lru_cache(maxsize=None)
def policies(pattern, accel):
    plan = build_plan(Request(pattern, accel, "kserve"))
    return plan, [o for o in render(plan).objects if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("pattern,accel", [("baseline", "gpu"), ("caching", "tpu"), ("multimodel", "cpu"),
                                           ("baseline", "sim")])
def test_single_node_flows(pattern, accel):
    plan, pols = policies(pattern, accel)
    for server in plan.servers:
        pods = kserve_pods(server.name)
        workload, scheduler = pods["workload"], pods["scheduler"]
        # serving: the gateway reaches vLLM and asks the endpoint picker (ext-proc) first
        assert allowed(pols, GATEWAY, workload, 8000)
        assert allowed(pols, GATEWAY, scheduler, 9002)
        # the picker scrapes the model servers' metrics and watches the API server
        assert allowed(pols, scheduler, workload, 8000)
        assert reaches_api_server(pols, scheduler)
        # names resolve everywhere; Prometheus in a labelled namespace scrapes
        for p in (workload, scheduler):
            assert allowed(pols, p, DNS, 53, "UDP") and allowed(pols, p, DNS, 53, "TCP")
        assert allowed(pols, PROMETHEUS, workload, 8000)
        # weights come from Hugging Face, except for the simulator that has none
        assert allowed(pols, workload, EXTERNAL, 443) == bool(server.source)
        # everything else is denied
        assert not allowed(pols, STRANGER, workload, 8000)
        assert not allowed(pols, NEIGHBOUR, workload, 8000)
        assert not allowed(pols, STRANGER, scheduler, 9002)
        assert not allowed(pols, workload, STRANGER, 8080)
        assert not allowed(pols, workload, EXTERNAL, 80)
        assert not allowed(pols, GATEWAY, workload, 22)


def test_multimodel_servers_are_isolated_from_each_other():
    plan, pols = policies("multimodel", "gpu")
    a, b = (kserve_pods(s.name) for s in plan.servers)
    assert not allowed(pols, a["scheduler"], b["workload"], 8000)
    assert not allowed(pols, a["workload"], b["workload"], 8000)


@pytest.mark.parametrize("accel", ["gpu"])   # moe on tpu is refused (docs/patterns/moe.md)
def test_moe_leader_and_workers_talk_and_download(accel):
    plan, pols = policies("moe", accel)
    pods = kserve_pods(plan.servers[0].name)
    leader, worker, scheduler = pods["leader"], pods["worker"], pods["scheduler"]
    for a, b in ((leader, worker), (worker, leader), (worker, worker)):
        assert allowed(pols, a, b, 5555) and allowed(pols, a, b, 29500)   # DP RPC, torch.distributed
    for p in (leader, worker):
        assert allowed(pols, p, EXTERNAL, 443) and allowed(pols, p, DNS, 53, "UDP")
    assert allowed(pols, GATEWAY, leader, 8000) and allowed(pols, scheduler, leader, 8000)
    assert not allowed(pols, scheduler, worker, 5555)
    assert not allowed(pols, STRANGER, worker, 5555)


def test_body_based_router_takes_ext_proc_calls_from_gateways_only():
    plan, pols = policies("multimodel", "gpu")
    (deploy,) = [o for o in render(plan).objects if o["kind"] == "Deployment"]
    bbr = pod("bbr", **deploy["spec"]["template"]["metadata"]["labels"])
    assert allowed(pols, GATEWAY, bbr, 9004)
    assert allowed(pols, bbr, DNS, 53, "UDP") and reaches_api_server(pols, bbr)
    assert not allowed(pols, STRANGER, bbr, 9004) and not allowed(pols, NEIGHBOUR, bbr, 9004)
    assert not allowed(pols, bbr, kserve_pods(plan.servers[0].name)["workload"], 8000)
