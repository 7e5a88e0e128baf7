"""Endpoint discovery from recorded, real-shaped API objects (validated against the CRDs).

The cluster calls themselves go to a local API server answering with the same recorded objects
(the cluster boundary); with a real vLLM behind the recorded addresses, smoke runs end to end.
"""
import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.portforward import port_forward
from lightrail.settings import ROOT, schemas_dir
from lightrail.smoke.discovery import (gateway_service, gateway_url, kserve_endpoint, llmisvc_url, metrics_endpoint,
                                       server_selector)
from lightrail.testing.kubeapi import FakeKubeAPI
from lightrail.testing.vllm import free_port
from lightrail.validate import validate_objects

FIXTURES = Path(__file__).parent / "fixtures" / "cluster"


def load(name):
    return yaml.safe_load((FIXTURES / name).read_text())


@pytest.mark.skipif(schemas_dir() is None, reason="no upstream CRDs: set LIGHTRAIL_SCHEMAS=DIR")
@pytest.mark.parametrize("name", ["gateway-programmed.yaml", "llmisvc-ready.yaml", "gateway-service.yaml",
                                  "pod-llmd-decode.yaml", "pod-kserve-workload.yaml"])
def test_recorded_objects_are_real_shaped(name):
    assert validate_objects([load(name)]) == []   # status included: the CRD schemas cover it


def test_gateway_url_from_status_addresses():
    gw = load("gateway-programmed.yaml")
    assert gateway_url(gw) == "http://34.118.10.20"
    gw["spec"]["listeners"][0]["port"] = 8080
    assert gateway_url(gw) == "http://34.118.10.20:8080"
    gw["status"]["addresses"] = [{"type": "IPAddress", "value": "2001:db8::1"}]
    assert gateway_url(gw) == "http://[2001:db8::1]:8080"
    del gw["status"]["addresses"]
    assert gateway_url(gw) is None


def test_llmisvc_url_from_status():
    svc = load("llmisvc-ready.yaml")
    assert llmisvc_url(svc) == "http://kserve-ingress-gateway.kserve.example.com/lightrail/baseline-qwen2-5-3b-instruct"
    del svc["status"]["url"]
    assert llmisvc_url(svc).endswith("/lightrail/baseline-qwen2-5-3b-instruct")
    assert llmisvc_url({"status": {}}) is None


def test_gateway_service_for_port_forward():
    svc = load("gateway-service.yaml")
    assert gateway_service([svc], "caching-gateway") == ("caching-gateway-istio", 80)
    assert gateway_service([svc], "other-gateway") is None


def test_kserve_multimodel_uses_the_gateway_root_not_one_models_path():
    svc = load("llmisvc-ready.yaml")
    assert kserve_endpoint(svc, body_routed=False).endswith("/lightrail/baseline-qwen2-5-3b-instruct")
    assert kserve_endpoint(svc, body_routed=True) == "http://kserve-ingress-gateway.kserve.example.com"


@pytest.mark.parametrize("stack, pod", [("llmd", "pod-llmd-decode.yaml"), ("kserve", "pod-kserve-workload.yaml")])
def test_server_selector_picks_the_model_server_pods(stack, pod):
    plan = build_plan(Request(pattern="caching", accel="gpu", stack=stack))
    labels = load(pod)["metadata"]["labels"]
    selector = dict(term.split("=") for term in server_selector(plan, plan.servers[0]).split(","))
    assert selector.items() <= labels.items() and len(selector) >= 2


def test_kserve_selector_lists_the_workload_pods_not_the_scheduler():
    """Mutant M17 (the kserve selector also matches scheduler pods): KServe v0.20 labels its
    router-scheduler (EPP) pods with the service's name and part-of too (SchedulerLabels); only
    `kserve.io/component=workload` tells the vLLM pods apart. The real client lists with the selector."""
    from kubernetes import client, config

    plan = build_plan(Request(pattern="caching", accel="gpu", stack="kserve"))
    (server,) = plan.servers
    workload = load("pod-kserve-workload.yaml")
    scheduler = copy.deepcopy(workload)
    scheduler["metadata"].update(name=f"{server.name}-kserve-router-scheduler-6c5d8-x2x2x", labels={
        "app.kubernetes.io/component": "llminferenceservice-router-scheduler",
        "app.kubernetes.io/name": server.name, "app.kubernetes.io/part-of": "llminferenceservice"})
    with FakeKubeAPI([scheduler, workload]) as api:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(api.kubeconfig)))
        pods = core.list_namespaced_pod("lightrail", label_selector=server_selector(plan, server)).items
    assert [p.metadata.name for p in pods] == [workload["metadata"]["name"]]


def test_metrics_endpoint_is_the_vllm_container():
    assert metrics_endpoint(load("pod-llmd-decode.yaml")) == ("http", "10.52.3.17", 8000)
    assert metrics_endpoint(load("pod-kserve-workload.yaml")) == ("https", "10.52.4.9", 8001)   # not the sidecar
    pending = load("pod-llmd-decode.yaml")
    pending["status"] = {"phase": "Pending"}
    assert metrics_endpoint(pending) is None


def smoke(kubeconfig, *args):
    return subprocess.run([sys.executable, "-m", "invoke", "smoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, KUBECONFIG=str(kubeconfig), COLUMNS="200"))


@pytest.mark.parametrize("stack, missing", [("llmd", "Gateway baseline-gateway"),
                                            ("kserve", "LLMInferenceService baseline-qwen2-5-3b-instruct")])
def test_a_pattern_that_is_not_deployed_is_named(stack, missing):
    with FakeKubeAPI([load("gateway-programmed.yaml")]) as api:     # only caching is deployed
        proc = smoke(api.kubeconfig, "--pattern=baseline", f"--stack={stack}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: {missing} not found in namespace lightrail: pattern baseline is not "
                                   f"deployed there with --stack={stack} "
                                   "(deploy it, or pass --namespace, --stack or --url)")


def test_an_unreachable_api_server_is_named(tmp_path):
    with FakeKubeAPI([]) as api:
        config = api.kubeconfig.read_text().replace(api.url, f"http://127.0.0.1:{free_port()}")
    (tmp_path / "kubeconfig").write_text(config)
    proc = smoke(tmp_path / "kubeconfig", "--pattern=caching")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot reach the cluster's API server to read Gateway caching-gateway: "
                                  "Connection refused (")


def test_an_unreachable_gateway_address_falls_back_to_a_port_forward_by_real_kubectl():
    gateway = at(load("gateway-programmed.yaml"), "127.0.0.1", free_port())      # nothing listens there
    with FakeKubeAPI([gateway]) as api:
        alone = smoke(api.kubeconfig, "--pattern=caching")
    with FakeKubeAPI([gateway, load("gateway-service.yaml")]) as api:
        forwarded = smoke(api.kubeconfig, "--pattern=caching")
    assert alone.returncode == 1 and alone.stderr.strip().splitlines()[-1] == (   # after progress lines on a slow machine
        "error: gateway caching-gateway has no reachable address and no Service to port-forward to "
        "(check `invoke status`, or pass --url)")
    # kubectl really ran against the API server (its discovery calls), and its own error is the message:
    # this API server serves reads only, not the port-forward stream.
    assert "/api?timeout=32s" in api.requests and forwarded.returncode == 1
    assert forwarded.stderr.strip().splitlines()[-1] == ("error: kubectl port-forward svc/caching-gateway-istio failed: Error from "
                                        "server (NotFound): the server could not find the requested resource")


def test_a_port_forward_that_never_starts_is_stopped_at_its_timeout(tmp_path, monkeypatch):
    silent = socket.socket()                          # an API server that accepts and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    with FakeKubeAPI([]) as api:
        config = api.kubeconfig.read_text().replace(api.url, f"http://127.0.0.1:{silent.getsockname()[1]}")
    (tmp_path / "kubeconfig").write_text(config)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    with pytest.raises(LightrailError, match=r"^kubectl port-forward svc/x did not start within 2 s$"):
        with port_forward("svc/x", 80, namespace="lightrail", timeout=2):
            pass
    silent.close()
    assert "kubectl" not in _children()


def _children() -> list[str]:
    """Command names of this process's live children (from /proc/PID/stat: `pid (comm) state ppid`)."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue                                  # exited while we looked
        if int(tail.split()[1]) == os.getpid():
            names.append(head.split("(", 1)[1])
    return names


def at(obj, url_host, port):
    """A recorded object moved to this machine: its address or pod IP is 127.0.0.1:<port>."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "Gateway":
        obj["status"]["addresses"] = [{"type": "IPAddress", "value": url_host}]
        obj["spec"]["listeners"][0]["port"] = port
    elif obj["kind"] == "Pod":
        obj["status"]["podIP"] = url_host
        obj["status"]["podIPs"] = [{"ip": url_host}]
        obj["spec"]["containers"][0]["ports"][0]["containerPort"] = port
    else:
        obj["status"]["url"] = f"http://{url_host}:{port}"
    return obj


@pytest.mark.vllm
def test_discovered_caching_deployment_passes_with_the_pods_metrics(vllm_server):
    port = vllm_server.port
    objects = [at(load("gateway-programmed.yaml"), "127.0.0.1", port),
               at(load("pod-llmd-decode.yaml"), "127.0.0.1", port)]
    with FakeKubeAPI(objects) as api:
        proc = smoke(api.kubeconfig, "--pattern=caching", "--output=json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = yaml.safe_load(proc.stdout)
    assert report["url"] == vllm_server.url
    prefix = next(c for c in report["checks"] if c["name"] == "prefix cache hits")
    assert prefix["ok"] and prefix["data"]["hits"] > 0
    assert "/api/v1/namespaces/lightrail/pods?labelSelector=llm-d.ai/inference-serving=true,llm-d.ai/model=" \
           "caching-qwen2-5-3b-instruct" in [unquote(r) for r in api.requests]


@pytest.mark.vllm
def test_discovered_kserve_deployment_passes(vllm_server):
    llmisvc = at(load("llmisvc-ready.yaml"), "127.0.0.1", vllm_server.port)
    with FakeKubeAPI([llmisvc]) as api:
        proc = smoke(api.kubeconfig, "--pattern=baseline", "--stack=kserve", "--output=json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load(proc.stdout)["url"] == vllm_server.url
