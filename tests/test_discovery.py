"""Endpoint discovery from recorded, real-shaped API objects (validated against the CRDs).

The same objects served by the real API server, with a real vLLM behind their addresses, are in
tests/e2e/test_smoke_discovery.py; here, what needs no server (or one that does not answer).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.portforward import port_forward
from lightrail.settings import ROOT, schemas_dir
from lightrail.smoke.discovery import (gateway_service, gateway_url, kserve_endpoint, llmisvc_url, metrics_endpoint,
                                       server_selector)
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


def test_metrics_endpoint_is_the_vllm_container():
    assert metrics_endpoint(load("pod-llmd-decode.yaml")) == ("http", "10.52.3.17", 8000)
    assert metrics_endpoint(load("pod-kserve-workload.yaml")) == ("https", "10.52.4.9", 8001)   # not the sidecar
    pending = load("pod-llmd-decode.yaml")
    pending["status"] = {"phase": "Pending"}
    assert metrics_endpoint(pending) is None


def smoke(kubeconfig, *args):
    return subprocess.run([sys.executable, "-m", "invoke", "smoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, KUBECONFIG=str(kubeconfig), COLUMNS="200"))


def kubeconfig_for(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def test_an_unreachable_api_server_is_named(tmp_path):
    kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")   # nothing listens there
    proc = smoke(tmp_path / "kubeconfig", "--pattern=caching")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot reach the cluster's API server to read Gateway caching-gateway: "
                                  "Connection refused (")


def test_a_port_forward_that_never_starts_is_stopped_at_its_timeout(tmp_path, monkeypatch):
    silent = socket.socket()                          # an API server that accepts and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{silent.getsockname()[1]}")
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
