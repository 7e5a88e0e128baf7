"""Endpoint discovery from recorded, real-shaped API objects (validated against the CRDs)."""
from pathlib import Path

import pytest
import yaml

from lightrail.settings import schemas_dir
from lightrail.smoke.discovery import gateway_service, gateway_url, kserve_endpoint, llmisvc_url
from lightrail.validate import validate_objects

FIXTURES = Path(__file__).parent / "fixtures" / "cluster"


def load(name):
    return yaml.safe_load((FIXTURES / name).read_text())


@pytest.mark.skipif(schemas_dir() is None, reason="no upstream CRDs: set LIGHTRAIL_SCHEMAS=DIR")
@pytest.mark.parametrize("name", ["gateway-programmed.yaml", "llmisvc-ready.yaml", "gateway-service.yaml"])
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
