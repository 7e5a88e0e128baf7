"""`invoke smoke` finding its endpoint through the real API server: objects as the controllers
report them (status written through the status subresource), label selectors evaluated by the
server, real kubectl for the port-forward fallback, and with a real vLLM behind the address, the
whole smoke run through discovery."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightrail.errors import LightrailError
from lightrail.ops import controllers
from lightrail.plan import Request, build_plan
from lightrail.settings import ROOT, schemas_dir
from lightrail.smoke.discovery import server_selector
from lightrail.testing.vllm import free_port

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cluster"


def load(name: str, namespace: str) -> dict:
    obj = yaml.safe_load((FIXTURES / name).read_text())
    obj["metadata"]["namespace"] = namespace
    return obj


@pytest.fixture(scope="module")
def served(cluster):
    """The Gateway API and LLMInferenceService kinds, served by the API server: the pinned CRDs (KServe's
    from its built module, without the conversion webhook no KServe runs here to serve)."""
    try:
        home = controllers.installed("kserve")
    except LightrailError as err:
        pytest.skip(str(err))
    if schemas_dir() is None:
        pytest.skip("no upstream CRDs: set LIGHTRAIL_SCHEMAS=DIR")
    crds = [d for d in controllers.documents(schemas_dir() / "crds" / "gateway-api-standard-v1.6.1.yaml",
                                             home / "config" / "crd" / "full" / "llmisvc")
            if d.get("kind") == "CustomResourceDefinition" and "names" in d["spec"]]   # not the conversion patches
    for crd in crds:
        crd["spec"].pop("conversion", None)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}))
    controllers.established([c["metadata"]["name"] for c in crds], cluster.kubeconfig, timeout=180)
    return cluster


def namespace(cluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


def put(cluster, obj: dict) -> None:
    """Create `obj`, then write its recorded status the way its controller would."""
    status = obj.get("status")
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))
    if status:
        kind = f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}" if "/" in obj["apiVersion"] else obj["kind"]
        cluster.kubectl("patch", kind, obj["metadata"]["name"], "-n", obj["metadata"]["namespace"],
                        "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def at(obj: dict, port: int) -> dict:
    """A recorded object moved to this machine: its address is 127.0.0.1:<port>."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "Gateway":
        obj["status"]["addresses"] = [{"type": "IPAddress", "value": "127.0.0.1"}]
        obj["spec"]["listeners"][0]["port"] = port
    else:
        obj["status"]["url"] = f"http://127.0.0.1:{port}"
    return obj


def smoke(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "smoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**cluster.env, "COLUMNS": "200"})


@pytest.mark.parametrize("stack, missing", [("llmd", "Gateway baseline-gateway"),
                                            ("kserve", "LLMInferenceService baseline-qwen2-5-3b-instruct")])
def test_a_pattern_that_is_not_deployed_is_named(served, stack, missing):
    ns = namespace(served, f"e2e-smoke-absent-{stack}")
    put(served, load("gateway-programmed.yaml", ns))     # only caching is deployed
    proc = smoke(served, "--pattern=baseline", f"--stack={stack}", f"--namespace={ns}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {missing} not found in namespace {ns}: pattern baseline is not "
                                   f"deployed there with --stack={stack} "
                                   "(deploy it, or pass --namespace, --stack or --url)")


def test_kserve_selector_lists_the_workload_pods_not_the_scheduler(served):
    """Mutant M17 (the kserve selector also matches scheduler pods): KServe v0.20 labels its
    router-scheduler (EPP) pods with the service's name and part-of too (SchedulerLabels); only
    `kserve.io/component=workload` tells the vLLM pods apart. The API server evaluates the selector."""
    from kubernetes import client, config

    ns = namespace(served, "e2e-smoke-selector")
    plan = build_plan(Request(pattern="caching", accel="gpu", stack="kserve"))
    (server,) = plan.servers
    workload = load("pod-kserve-workload.yaml", ns)
    scheduler = copy.deepcopy(workload)
    scheduler["metadata"].update(name=f"{server.name}-kserve-router-scheduler-6c5d8-x2x2x", labels={
        "app.kubernetes.io/component": "llminferenceservice-router-scheduler",
        "app.kubernetes.io/name": server.name, "app.kubernetes.io/part-of": "llminferenceservice"})
    for pod in (workload, scheduler):
        pod["spec"].pop("nodeName", None)
        put(served, {**pod, "status": None})
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(served.kubeconfig), context=served.context))
    pods = core.list_namespaced_pod(ns, label_selector=server_selector(plan, server)).items
    assert [p.metadata.name for p in pods] == [workload["metadata"]["name"]]


def test_an_unreachable_gateway_address_falls_back_to_a_port_forward_by_real_kubectl(served):
    ns = namespace(served, "e2e-smoke-forward")
    put(served, at(load("gateway-programmed.yaml", ns), free_port()))      # nothing listens there
    alone = smoke(served, "--pattern=caching", f"--namespace={ns}")
    assert alone.returncode == 1 and alone.stderr.strip().splitlines()[-1] == (
        "error: gateway caching-gateway has no reachable address and no Service to port-forward to "
        "(check `invoke status`, or pass --url)"), alone.stderr
    put(served, load("gateway-service.yaml", ns))
    forwarded = smoke(served, "--pattern=caching", f"--namespace={ns}")
    # no gateway pod runs behind the Service: kubectl's own error is the message
    assert forwarded.returncode == 1 and "Traceback" not in forwarded.stderr, forwarded.stderr
    assert forwarded.stderr.strip().splitlines()[-1].startswith("error: kubectl port-forward svc/caching-gateway-istio "), \
        forwarded.stderr


@pytest.mark.vllm
def test_discovered_kserve_deployment_passes(served, vllm_server):
    ns = namespace(served, "e2e-smoke-kserve")
    put(served, at(load("llmisvc-ready.yaml", ns), vllm_server.port))
    proc = smoke(served, "--pattern=baseline", "--stack=kserve", f"--namespace={ns}", "--output=json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load(proc.stdout)["url"] == vllm_server.url


@pytest.mark.vllm
def test_discovered_caching_deployment_passes_with_the_pods_metrics(served, vllm_server):
    """The gateway's address and the model-server pod's IP both lead to a real vLLM; the pod is bound
    to a node no kwok controller manages, so the status written here is the one the server keeps."""
    ns = namespace(served, "e2e-smoke-caching")
    port = vllm_server.port
    put(served, at(load("gateway-programmed.yaml", ns), port))
    pod = load("pod-llmd-decode.yaml", ns)
    pod["spec"].pop("serviceAccountName")                  # no such ServiceAccount here
    pod["spec"]["nodeName"] = "e2e-unmanaged-node"
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = port
    pod["status"].update(podIP="127.0.0.1", podIPs=[{"ip": "127.0.0.1"}])
    put(served, pod)
    proc = smoke(served, "--pattern=caching", f"--namespace={ns}", "--output=json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = yaml.safe_load(proc.stdout)
    assert report["url"] == vllm_server.url
    prefix = next(c for c in report["checks"] if c["name"] == "prefix cache hits")
    assert prefix["ok"] and prefix["data"]["hits"] > 0
