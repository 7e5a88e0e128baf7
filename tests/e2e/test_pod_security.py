"""Every pod a render makes is admitted by the local kube-apiserver's own PodSecurity admission at the
level its plan declares, and refused one level stricter (so the check can fail).

Pods are created with `kubectl create --dry-run=server` in a namespace labelled as the plan labels
it: admission runs in full (PSA enforces on Pods; on Deployments it only warns) and nothing is
stored. The llmd stack's pods come from its rendered workloads; the kserve stack's from the
Deployments / LeaderWorkerSets the real KServe controller makes of the LLMInferenceServices (its
presets merged in); the istio gateway's from what the real istiod deploys for the llmd Gateway.
"""
from __future__ import annotations

import contextlib
import json
import time

import pytest
import yaml

from lightrail import podsecurity
from lightrail.catalog import STACKS, load_catalog
from lightrail.errors import LightrailError
from lightrail.ops import controllers
from lightrail.plan import Request, build_plan
from lightrail.render import render
from lightrail.settings import charts_dir, schemas_dir

CATALOG = load_catalog()
ISTIO_KINDS = ("DestinationRule", "EnvoyFilter")   # no istio CRDs here; they make no pods
WORKLOADS = ("Deployment", "StatefulSet", "LeaderWorkerSet")
SIM = [(p, "sim", s) for p in CATALOG.patterns for s in STACKS if not CATALOG.pattern(p).unsupported_reason("sim", s)]
ACCELERATED = [("baseline", "gpu", "llmd"), ("moe", "gpu", "llmd"), ("caching", "tpu", "llmd"),
               ("baseline", "gpu", "kserve"), ("moe", "gpu", "kserve")]
KSERVE_GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                  "metadata": {"name": "kserve-ingress-gateway", "namespace": controllers.KSERVE_NAMESPACE},
                  "spec": {"gatewayClassName": "istio", "listeners": [
                      {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}}


def templates(workload: dict) -> list[tuple[str, dict]]:
    """(name, pod template) of a workload: a LeaderWorkerSet has a leader and a worker template."""
    name, spec = workload["metadata"]["name"], workload["spec"]
    if workload["kind"] != "LeaderWorkerSet":
        return [(name, spec["template"])]
    lws = spec["leaderWorkerTemplate"]
    found = [(f"{name}-worker", lws["workerTemplate"])]
    return found + ([(f"{name}-leader", lws["leaderTemplate"])] if lws.get("leaderTemplate") else [])


def pod(name: str, template: dict) -> dict:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name[:63], "labels": labels},
            "spec": template["spec"]}


def label_namespace(cluster, namespace: str, labels: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}))


def refusals(cluster, namespace: str, labels: dict, pods: list[dict]) -> dict[str, str]:
    """Label the namespace, then create each pod there as a server-side dry run: {pod: refusal}."""
    label_namespace(cluster, namespace, labels)
    accounts = sorted({p["spec"].get("serviceAccountName") for p in pods} - {None})
    if accounts:
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(
            [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": a, "namespace": namespace}}
             for a in accounts]))
    out = {}
    for p in pods:
        proc = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(p),
                               check=False)
        if proc.returncode:
            out[p["metadata"]["name"]] = proc.stderr.strip()
    return out


def stricter(level: str) -> str | None:
    i = podsecurity.LEVELS.index(level)
    return podsecurity.LEVELS[i - 1] if i else None


def check(cluster, plan, pods: list[dict]) -> None:
    """Admitted at the plan's level; one level stricter, at least one pod refused by PodSecurity."""
    assert pods, f"no pods to check for {plan.pattern.name}/{plan.accel}/{plan.stack}"
    refused = refusals(cluster, plan.namespace, plan.namespace_labels, pods)
    assert not refused, "\n".join(f"{name}: {why}" for name, why in refused.items())
    if stricter(plan.pod_security):
        labels = podsecurity.namespace_labels(stricter(plan.pod_security), plan.versions["kubernetes"])
        refused = refusals(cluster, f"{plan.namespace}-stricter", labels, pods)
        assert refused and all("violates PodSecurity" in r for r in refused.values()), refused


def llmd_pods(plan) -> list[dict]:
    objects = render(plan, charts=charts_dir()).objects
    return [pod(name, t) for o in objects if o["kind"] in WORKLOADS for name, t in templates(o)]


def namespace(pattern: str, accel: str, stack: str, level: str = "") -> str:
    return f"psa-{pattern}-{accel}-{stack}{'-' + level if level else ''}"


@pytest.fixture(scope="module")
def need_charts():
    if charts_dir() is None:
        pytest.skip("rendering the llmd stack needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")


@pytest.mark.parametrize("pattern, accel", [(p, a) for p, a, s in SIM + ACCELERATED if s == "llmd"])
def test_llmd_pods_are_admitted_at_the_declared_level(cluster, need_charts, pattern, accel):
    plan = build_plan(Request(pattern, accel, "llmd", namespace=namespace(pattern, accel, "llmd")))
    assert plan.pod_security == "restricted"
    check(cluster, plan, llmd_pods(plan))


def test_without_lightrails_security_contexts_restricted_refuses_the_llmd_pods(cluster, need_charts):
    """The same pods rendered at `baseline` (no securityContexts added) fail `restricted`: what the
    render adds, including the post-renderer's patch of the chart's endpoint picker, is what passes."""
    plan = build_plan(Request("multimodel", "sim", "llmd", namespace="psa-lax", pod_security="baseline"))
    pods = llmd_pods(plan)
    assert refusals(cluster, plan.namespace, plan.namespace_labels, pods) == {}
    strict = podsecurity.namespace_labels("restricted", plan.versions["kubernetes"])
    refused = refusals(cluster, "psa-lax-strict", strict, pods)
    assert set(refused) == {p["metadata"]["name"] for p in pods}   # every model server, picker and the BBR


def _kserve_children(cluster, objects: list[dict], timeout: float = 180) -> list[dict]:
    """The workloads KServe made for these LLMInferenceServices (owner references), once all exist: each
    service's model server, and its endpoint picker's Deployment where it has a scheduler."""
    wanted = {(o["metadata"]["namespace"], o["metadata"]["name"]): 1 + ("scheduler" in (o["spec"].get("router") or {}))
              for o in objects if o["kind"] == "LLMInferenceService"}
    deadline = time.monotonic() + timeout
    while True:
        found, owned = [], dict.fromkeys(wanted, 0)
        for resource in ("deployments", "leaderworkersets"):
            items = json.loads(cluster.kubectl("get", resource, "-A", "-o", "json").stdout)["items"]
            for o in items:
                for r in o["metadata"].get("ownerReferences", []):
                    if (o["metadata"]["namespace"], r["name"]) in wanted:
                        found.append(o)
                        owned[(o["metadata"]["namespace"], r["name"])] += 1
        if all(owned[s] >= n for s, n in wanted.items()):
            return found
        assert time.monotonic() < deadline, f"KServe made {owned} of the workloads {wanted}"
        time.sleep(2)


def need_controller(name: str) -> None:
    try:
        controllers.installed(name)
    except LightrailError as err:   # names the build command
        pytest.skip(str(err))


def upstream_crds(*keys: str) -> list[dict]:
    if schemas_dir() is None:
        pytest.skip("needs the pinned upstream CRDs: set LIGHTRAIL_SCHEMAS=DIR")
    return controllers.documents(*(schemas_dir() / CATALOG.versions["crds"][k]["schema"] for k in keys))


# what KServe makes is checked here and by test_monitoring (its PodMonitors select these pods): one
# controller run for both (the conftest's `kserve_made`), the monitored plan among these
KSERVE_REQUESTS = [Request(p, a, "kserve", namespace=namespace(p, a, "kserve")) for p, a, s in SIM + ACCELERATED
                   if s == "kserve"] + [
    Request("multimodel", "sim", "kserve", namespace="monitoring-kserve", monitoring="prometheus")]


def kserve_made_of(cluster, workdir) -> dict[str, tuple]:
    """Run the real KServe controller on every KSERVE_REQUESTS plan, each in a namespace labelled as deploy
    labels it: {namespace: (plan, rendered objects, the workloads KServe made there)}."""
    need_controller("kserve")
    crds = upstream_crds("gateway-api", "inference-extension", "lws")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(crds))
    plans = [build_plan(r) for r in KSERVE_REQUESTS]
    rendered = {p.namespace: render(p).objects for p in plans}
    with controllers.running("kserve", cluster.kubeconfig, workdir):
        for plan in plans:
            label_namespace(cluster, plan.namespace, plan.namespace_labels)
            objects = [o for o in rendered[plan.namespace] if o["metadata"].get("namespace") == plan.namespace
                       and o["kind"] not in (*ISTIO_KINDS, "PodMonitor", "PrometheusRule")]
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                            stdin=yaml.safe_dump_all([KSERVE_GATEWAY, *objects]))
        workloads = _kserve_children(cluster, [o for objs in rendered.values() for o in objs])
    return {p.namespace: (p, rendered[p.namespace], [w for w in workloads if w["metadata"]["namespace"] == p.namespace])
            for p in plans}


def test_kserve_pods_are_admitted_at_the_declared_level(cluster, kserve_made):
    """KServe merges its presets into the pods: only the real controller shows what runs."""
    made = [kserve_made[namespace(p, a, "kserve")] for p, a, s in SIM + ACCELERATED if s == "kserve"]
    assert {plan.pattern.name: plan.pod_security for plan, _, _ in made}["moe"] == "privileged"
    for plan, rendered, workloads in made:
        mine = workloads + [o for o in rendered if o["kind"] in WORKLOADS
                            and o["metadata"].get("namespace") == plan.namespace]   # the body-based router
        check(cluster, plan, [pod(name, t) for w in mine for name, t in templates(w)])


def test_the_istio_gateway_proxy_is_admitted_as_restricted(cluster, need_charts, tmp_path):
    """istiod deploys the llmd Gateway's proxy into the deployment's namespace: with the settings
    `invoke prereqs --istio` gives it, that pod passes `restricted` too."""
    need_controller("istio")
    crds = upstream_crds("gateway-api", "inference-extension")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(crds))
    plan = build_plan(Request("baseline", "sim", "llmd", namespace="psa-gateway"))
    objects = render(plan, charts=charts_dir()).objects
    gateway = next(o for o in objects if o["kind"] == "Gateway")
    label_namespace(cluster, plan.namespace, plan.namespace_labels)
    with contextlib.ExitStack() as stack:
        stack.enter_context(controllers.running("istio", cluster.kubeconfig, tmp_path))
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                        stdin=yaml.safe_dump_all([o for o in objects if o["kind"] in ("Gateway", "ConfigMap")]))
        deadline = time.monotonic() + 120
        while not (proxy := cluster.kubectl("get", "deployment", f"{gateway['metadata']['name']}-istio", "-n",
                                            plan.namespace, "-o", "json", check=False)).stdout:
            assert time.monotonic() < deadline, "istiod made no gateway Deployment"
            time.sleep(2)
    check(cluster, plan, [pod(n, t) for n, t in templates(json.loads(proxy.stdout))])
