"""Real upstream controllers (versions.yaml `controllers:`), run as local processes against a kwok
cluster, reconcile what Lightrail renders. Nothing here fakes a controller: the verdicts are
Lightrail's own readiness rules applied to what the controllers wrote."""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lightrail import tools
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.ops import controllers, kwok
from lightrail.ops.objects import condition, conditions, group, is_true
from lightrail.ops.readiness import State, assess
from lightrail.plan import Request, build_plan
from lightrail.render import render
from lightrail.settings import TOOLS_BIN, charts_dir, schemas_dir

CATALOG = load_catalog()
CONTROL_PLANE = ("kwokctl", "kwok", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
# KServe's configured ingress gateway (inferenceservice-config `kserveIngressGateway`), as its install makes it
KSERVE_GATEWAY = controllers.KSERVE_INGRESS_GATEWAY


@dataclass
class Cluster:
    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return tools.run("kubectl", f"--kubeconfig={self.kubeconfig}", *args, input=input).stdout

    def apply(self, objects: list[dict]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(objects))

    def get(self, obj: dict) -> dict | None:
        """The live counterpart of a desired object, or None."""
        kind = obj["kind"].lower() + (f".{group(obj['apiVersion'])}" if group(obj["apiVersion"]) else "")
        out = self.kubectl("get", kind, obj["metadata"]["name"], "-n", obj["metadata"].get("namespace", "default"),
                           "--ignore-not-found", "-o", "json")
        return json.loads(out) if out.strip() else None

    def items(self, resource: str, namespace: str, selector: str = "") -> list[dict]:
        args = ["get", resource, "-n", namespace, "-o", "json", *([f"-l={selector}"] if selector else [])]
        return json.loads(self.kubectl(*args))["items"]

    def states(self, objects: list[dict], kinds: tuple[str, ...]) -> list[State]:
        """Lightrail's readiness verdict on each desired object of these kinds, from the live cluster."""
        return [assess(o, self.get(o), self.items("pods", o["metadata"]["namespace"]))
                for o in objects if o["kind"] in kinds]


def built(name: str) -> Path:
    try:
        return controllers.installed(name)
    except LightrailError as err:
        pytest.skip(str(err))


def all_ready(cluster: Cluster, objects: list[dict], kinds: tuple[str, ...], timeout: float = 180) -> list[State]:
    """Wait until every object of these kinds is ready by Lightrail's rules; fail naming the ones that are not."""
    deadline = time.monotonic() + timeout
    while True:
        found = cluster.states(objects, kinds)
        if found and all(s.ready for s in found):
            return found
        if time.monotonic() > deadline:
            pytest.fail("not ready: " + "; ".join(f"{s.what}: {s.summary} {s.reason}" for s in found if not s.ready))
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A kwok cluster of the pinned control plane, as local processes (kwokctl --runtime binary)."""
    missing = [b for b in CONTROL_PLANE if not (TOOLS_BIN / b).exists()]
    if missing:
        pytest.skip(f"no {', '.join(missing)} in {TOOLS_BIN}: run scripts/setup on a machine with Go")
    work = tmp_path_factory.mktemp("kwok")
    name = f"lr-ctl-{os.getpid()}"
    env = {"KWOK_WORKDIR": str(work), "KWOK_KUBE_VERSION": CATALOG.versions["control-plane"]["kubernetes"]["version"]}
    binaries = [f"--{b}-binary={TOOLS_BIN / b}" for b in CONTROL_PLANE[2:]]
    with kwok.ports_lock():
        tools.run("kwokctl", "create", "cluster", f"--name={name}", "--runtime=binary",
                  f"--kubeconfig={work / 'kubeconfig'}", *binaries, f"--kwok-controller-binary={TOOLS_BIN / 'kwok'}",
                  "--wait=120s", env=env, timeout=300)
    try:
        yield Cluster(work / "kubeconfig")
    finally:
        tools.run("kwokctl", "delete", "cluster", f"--name={name}", env=env, check=False)


def node(name: str, shape: dict, labels: dict | None = None, taints: list | None = None, **extra: str) -> dict:
    """A kwok-managed node with a catalog machine shape (kwok marks it Ready and runs its pods)."""
    allocatable = {"cpu": shape["cpu"], "memory": shape["memory"], "pods": "110", **extra}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": list(taints or [])},
            "status": {"allocatable": allocatable, "capacity": allocatable}}


def gpu_nodes(gpu_type: str, count: int) -> list[dict]:
    """Nodes of the catalog's node pool for this GPU type: its label, taint and GPUs per node."""
    accel = CATALOG.accelerator("gpu")
    shape = accel["nodes"][gpu_type]
    return [node(f"{gpu_type}-{i}", shape, {accel["node_selector_key"]: accel["types"][gpu_type]["node_label"]},
                 accel["nodes"]["taints"], **{accel["resource"]: str(shape["per_node"])}) for i in range(count)]


def cpu_nodes(count: int = 2) -> list[dict]:
    return [node(f"cpu-{i}", CATALOG.accelerator("cpu")["nodes"]["default"]) for i in range(count)]


def upstream_crds(*keys: str) -> list[dict]:
    """Pinned CRDs that Lightrail's prereqs install (versions.yaml `crds:`), from LIGHTRAIL_SCHEMAS."""
    if schemas_dir() is None:
        pytest.skip("needs the pinned upstream CRDs: set LIGHTRAIL_SCHEMAS=DIR")
    return controllers.documents(*(schemas_dir() / CATALOG.versions["crds"][k]["schema"] for k in keys))


def rendered(pattern: str, accel: str, stack: str) -> list[dict]:
    if stack == "llmd" and charts_dir() is None:
        pytest.skip("rendering the llmd stack needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
    objects = render(build_plan(Request(pattern, accel, stack)), charts=charts_dir()).objects
    names = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names] + objects


def test_lws_runs_the_moe_leader_and_worker_pods(cluster, tmp_path):
    built("lws")
    objects = rendered("moe", "gpu", "llmd")
    (lws,) = [o for o in objects if o["kind"] == "LeaderWorkerSet"]
    name, namespace, size = lws["metadata"]["name"], lws["metadata"]["namespace"], lws["spec"]["leaderWorkerTemplate"]["size"]
    cluster.apply(gpu_nodes(build_plan(Request("moe", "gpu", "llmd")).accel_type, size))
    with controllers.running("lws", cluster.kubeconfig, tmp_path):
        cluster.apply([o for o in objects if o["kind"] in ("Namespace", "ServiceAccount", "LeaderWorkerSet")])
        all_ready(cluster, [lws], ("LeaderWorkerSet",))
    pods = cluster.items("pods", namespace, f"{LWS_NAME}={name}")
    # the leader (index 0) and its workers, labelled by LWS's pod webhook, each on its own GPU node
    assert sorted(p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] for p in pods) \
        == [str(i) for i in range(size)]
    assert len({p["spec"]["nodeName"] for p in pods}) == size
    assert all(p["status"]["phase"] == "Running" for p in pods)
    env = {e["name"]: e.get("value") for p in pods for e in p["spec"]["containers"][0].get("env", [])}
    assert env["LWS_LEADER_ADDRESS"].startswith(f"{name}-0.{name}.{namespace}")


def test_istiod_accepts_and_programs_the_llmd_gateway_route_and_pool(cluster, tmp_path):
    built("istio")
    objects = rendered("baseline", "sim", "llmd")
    cluster.apply(upstream_crds("gateway-api", "inference-extension") + cpu_nodes())
    with controllers.running("istio", cluster.kubeconfig, tmp_path):
        cluster.apply(objects)
        found = all_ready(cluster, objects, ("Gateway", "HTTPRoute", "InferencePool", "Deployment"))
    assert {s.what.split()[0] for s in found} == {"Gateway", "HTTPRoute", "InferencePool", "Deployment"}
    (gateway,) = [o for o in objects if o["kind"] == "Gateway"]
    # istiod's gateway deployment controller made the gateway's proxy Deployment
    assert cluster.get({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": f"{gateway['metadata']['name']}-istio", "namespace": gateway["metadata"]["namespace"]}})


def test_kserve_reconciles_an_llminferenceservice_into_its_children(cluster, tmp_path):
    built("kserve")
    objects = rendered("baseline", "sim", "kserve")
    (llmisvc,) = [o for o in objects if o["kind"] == "LLMInferenceService"]
    name, ns = llmisvc["metadata"]["name"], llmisvc["metadata"]["namespace"]
    cluster.apply(upstream_crds("gateway-api", "inference-extension") + cpu_nodes())
    with controllers.running("kserve", cluster.kubeconfig, tmp_path):
        cluster.apply([KSERVE_GATEWAY, *objects])

        def owned() -> dict[str, list[str]]:
            out = {}
            for resource in ("deployments", "services", "httproutes", "inferencepools"):
                for o in cluster.items(resource, ns):
                    if any(r["name"] == name for r in o["metadata"].get("ownerReferences", [])):
                        out.setdefault(o["kind"], []).append(o["metadata"]["name"])
            return out
        deadline = time.monotonic() + 180
        while (len(owned().get("Deployment", [])) < 2 or not owned().get("InferencePool")
               or not is_true(condition(conditions(cluster.get(llmisvc) or {}), "WorkloadsReady"))):
            assert time.monotonic() < deadline, f"children so far: {owned()}"
            time.sleep(2)
        children, live = owned(), cluster.get(llmisvc)
    # the model server and the endpoint picker, their Services, the pool and the route on KServe's gateway
    assert set(children) == {"Deployment", "Service", "HTTPRoute", "InferencePool"} and len(children["Deployment"]) == 2
    assert all(is_true(condition(conditions(live), c)) for c in ("MainWorkloadReady", "SchedulerWorkloadReady"))
    # no gateway controller runs here, so Lightrail's readiness reports the route KServe is waiting for
    state = assess(llmisvc, live)
    assert not state.ready and "HTTPRoute" in state.reason


def test_kserve_istiod_and_lws_make_moe_ready(cluster, tmp_path):
    for name in ("kserve", "istio", "lws"):
        built(name)
    objects = rendered("moe", "gpu", "kserve")
    (llmisvc,) = [o for o in objects if o["kind"] == "LLMInferenceService"]
    cluster.apply(upstream_crds("gateway-api", "inference-extension")
                  + gpu_nodes(build_plan(Request("moe", "gpu", "kserve")).accel_type, 2))
    with contextlib.ExitStack() as stack:
        for name in ("lws", "istio", "kserve"):
            stack.enter_context(controllers.running(name, cluster.kubeconfig, tmp_path / name))
        cluster.apply([KSERVE_GATEWAY, *objects])
        all_ready(cluster, [llmisvc, KSERVE_GATEWAY], ("LLMInferenceService", "Gateway"), timeout=300)
    ns, parallelism = llmisvc["metadata"]["namespace"], llmisvc["spec"]["parallelism"]
    # KServe made the multi-node workload a LeaderWorkerSet, whose groups LWS filled with leader and workers
    (lws,) = [o for o in cluster.items("leaderworkersets", ns)
              if any(r["name"] == llmisvc["metadata"]["name"] for r in o["metadata"].get("ownerReferences", []))]
    pods = cluster.items("pods", ns, f"{LWS_NAME}={lws['metadata']['name']}")
    assert assess(lws, lws, pods).ready
    assert len(pods) == parallelism["data"] // parallelism["dataLocal"] and all(p["status"]["phase"] == "Running" for p in pods)
