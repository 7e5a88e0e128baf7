"""The local control plane itself, and the cluster tasks that need no data plane: nodes shaped like
GKE's with the real scheduler placing pods, prereqs from local CRDs (twice), doctor's verdicts."""
from __future__ import annotations

import json
import time

import pytest

from lightrail.catalog import load_catalog
from lightrail.testing.localcluster import LocalCluster
from tests.e2e.conftest import MISSING, apply_nodes, invoke


def wait_for(check, seconds: float = 60, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def test_a_real_api_server_at_the_pinned_version(cluster):
    version = json.loads(cluster.kubectl("version", "--output=json").stdout)["serverVersion"]["gitVersion"]
    assert version == load_catalog().versions["control-plane"]["kubernetes"]["version"]
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    # Real admission: an object the API server's own validation rejects.
    bad = cluster.kubectl("create", "configmap", "Bad_Name", check=False)
    assert bad.returncode != 0 and "RFC 1123" in bad.stderr


def test_nodes_are_shaped_like_gke_and_the_scheduler_places_by_accelerator(cluster):
    apply_nodes(cluster, "cpu:1,tpu:v6e-2x4:1,gpu:h100:1")
    node = json.loads(cluster.kubectl("get", "node", "kwok-tpu-v6e-2x4-0", "-o", "json").stdout)
    assert node["status"]["allocatable"]["google.com/tpu"] == "8"
    assert node["metadata"]["labels"]["cloud.google.com/gke-tpu-topology"] == "2x4"
    assert {"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert wait_for(lambda: "True" in cluster.kubectl(
        "get", "node", "kwok-tpu-v6e-2x4-0", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout)

    cluster.kubectl("create", "namespace", "sched")
    tpu = {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice", "cloud.google.com/gke-tpu-topology": "2x4"}
    toleration = [{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}]

    def pod(name, chips, tolerate=True):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "sched"},
                "spec": {"nodeSelector": tpu, "tolerations": toleration if tolerate else [],
                         "containers": [{"name": "c", "image": "example/none",
                                         "resources": {"limits": {"google.com/tpu": str(chips)}}}]}}

    pods = [pod("fits", 8), pod("too-big", 9), pod("no-toleration", 1, tolerate=False)]
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))

    def phase(name):
        return cluster.kubectl("get", "pod", name, "-n", "sched", "-o", "jsonpath={.spec.nodeName} {.status.phase}"
                               ).stdout.strip()

    assert wait_for(lambda: phase("fits") == "kwok-tpu-v6e-2x4-0 Running"), phase("fits")
    for name in ("too-big", "no-toleration"):
        assert wait_for(lambda: "FailedScheduling" in cluster.kubectl(
            "get", "events", "-n", "sched", f"--field-selector=involvedObject.name={name}").stdout)
        assert phase(name) == "Pending"
    cluster.kubectl("delete", "namespace", "sched", "--timeout=120s")   # gone before the next test counts namespaces


def test_prereqs_from_local_crds_then_nothing_to_install(cluster):
    first = invoke(cluster, "prereqs", "--stack=kserve", "--local-crds", ok=False)
    assert "install Gateway API CRDs" in first.stdout and "install LeaderWorkerSet" in first.stdout, first.stdout
    served = cluster.kubectl("api-resources", "--api-group=inference.networking.k8s.io", "-o", "name").stdout
    assert "inferencepools.inference.networking.k8s.io" in served
    second = invoke(cluster, "prereqs", "--stack=kserve", "--local-crds", ok=False)
    assert "nothing to install" in second.stdout and "install " not in second.stdout.replace("nothing to install", "")
    # KServe itself is not installed by prereqs: said, with a non-zero exit.
    assert second.returncode == 1 and "missing: KServe" in second.stdout


def test_doctor_says_what_is_missing_for_moe_on_too_few_gpu_hosts_and_applies_nothing(cluster):
    """moe on L4 wants 2 pods of 4 GPUs; one g2-standard-48 node has 4: one pod short, 4 GPUs missing."""
    apply_nodes(cluster, "cpu:1,gpu:l4:1")
    before = cluster.kubectl("get", "namespaces", "-o", "name").stdout
    proc = invoke(cluster, "doctor", "--pattern=moe", "--accel=gpu", "--gpu-type=l4", "--stack=llmd", ok=False)
    assert proc.returncode == 1
    capacity = next((line for line in proc.stdout.splitlines() if "capacity" in line), proc.stdout + proc.stderr)
    assert "fail" in capacity and "only 1 of 2 model-server pod(s) fit" in capacity, proc.stdout
    assert "missing 4 nvidia.com/gpu" in capacity, capacity
    assert cluster.kubectl("get", "namespaces", "-o", "name").stdout == before


def test_a_kind_installed_after_discovery_is_found_by_the_same_client(cluster, monkeypatch):
    """`invoke up` installs CRDs, then deploys, in one process: discovery must not hide the new kinds
    (it did: the client cached discovery per server URL, across processes and clusters)."""
    from lightrail.ops.cluster import KubeCluster
    from lightrail.settings import schemas_dir

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = KubeCluster(cluster.context)
    assert client.list("llm-d.ai/v1alpha2", "InferenceModelRewrite") == []
    cluster.kubectl("apply", "--server-side", "-f", str(schemas_dir() / "crds/llm-d-router-v0.10.0.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/inferencemodelrewrites.llm-d.ai")
    cluster.kubectl("create", "namespace", "rewrites")
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "llm-d.ai/v1alpha2", "kind": "InferenceModelRewrite",
        "metadata": {"name": "chat", "namespace": "rewrites"},
        "spec": {"poolRef": {"name": "pool"}, "rules": [{"targets": [{"modelRewrite": "m"}]}]}}))
    assert [o["metadata"]["name"] for o in client.list("llm-d.ai/v1alpha2", "InferenceModelRewrite", "rewrites")] \
        == ["chat"]


def test_down_stops_every_process_and_removes_the_context(tmp_path):
    if MISSING:
        pytest.skip(f"local control plane not built ({', '.join(MISSING)}): run scripts/setup with a Go toolchain")
    local = LocalCluster("down", tmp_path).start()
    assert len(local.processes()) >= 5, local.processes()   # etcd, apiserver, controller-manager, scheduler, kwok
    proc = invoke(local, "down", "--engine=kwok", "--name=down")
    assert "delete kwok cluster down" in proc.stdout
    assert local.wait_gone() == []
    assert "kwok-down" not in local.kubeconfig.read_text()
    assert not (tmp_path / "kwok" / "clusters" / "down").exists()
    again = invoke(local, "down", "--engine=kwok", "--name=down")
    assert "no kwok cluster down" in again.stdout


def test_up_deploys_the_sim_baseline_with_a_real_gateway_controller_and_down_leaves_nothing(tmp_path):
    """The quick start without Docker: cluster, nodes, CRDs, istiod, sim baseline ready, status; then down."""
    from lightrail.errors import LightrailError
    from lightrail.ops import controllers

    if MISSING:
        pytest.skip(f"local control plane not built ({', '.join(MISSING)}): run scripts/setup with a Go toolchain")
    try:
        controllers.installed("istio")
    except LightrailError as err:
        pytest.skip(str(err))
    local = LocalCluster("up", tmp_path)
    try:
        proc = invoke(local, "up", "--engine=kwok", "--name=up", "--nodes=cpu:2", "--timeout=300")
        out = proc.stdout
        assert "istio running (pid" in out and "no smoke on kwok" in out, out
        assert "status: baseline (llmd, sim) 1/1 ready" in out, out
    finally:
        invoke(local, "down", "--engine=kwok", "--name=up")
    assert local.wait_gone() == []


def test_the_api_server_accepts_aliases_weights_claims_and_image_volumes(cluster):
    """Issue 12 §2-3 objects, rendered with the real charts, accepted by the real API server (server-side
    dry run, with the pinned InferenceModelRewrite CRD installed as prereqs installs it)."""
    from lightrail.plan import Request, build_plan
    from lightrail.render import render_validated
    from lightrail.settings import charts_dir, schemas_dir

    if charts_dir() is None:
        pytest.skip("needs the pinned charts: set LIGHTRAIL_CHARTS")
    cluster.kubectl("apply", "--server-side", "-f", str(schemas_dir() / "crds/llm-d-router-v0.10.0.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/inferencemodelrewrites.llm-d.ai")
    cluster.kubectl("create", "namespace", "weights")
    wanted = {"InferenceModelRewrite", "PersistentVolumeClaim", "Deployment"}
    for weights in ("pvc", "oci:registry.example.com/models/qwen:1"):
        plan = build_plan(Request("baseline", "gpu", namespace="weights", weights=weights,
                                  aliases=(("chat", "Qwen/Qwen2.5-3B-Instruct"),)))
        objects = [o for o in render_validated(plan, charts=charts_dir(), schemas=schemas_dir()).objects
                   if o["kind"] in wanted]
        proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                               stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        assert proc.returncode == 0, proc.stderr
        assert sum(line.endswith("(server dry run)") for line in proc.stdout.splitlines()) == len(objects), proc.stdout
