"""Find the endpoint users hit, from the objects a deployment created.

Pure functions read API objects (dicts); `discover` is the thin part that asks the cluster,
and falls back to a managed `kubectl port-forward` when the address is not reachable here.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from urllib.parse import urlparse

from lightrail.errors import LightrailError
from lightrail.plan import Plan

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def gateway_url(gateway: dict) -> str | None:
    """http(s)://address[:port] of a programmed Gateway, from status.addresses and its listener."""
    addresses = (gateway.get("status") or {}).get("addresses") or []
    if not addresses:
        return None
    listener = ((gateway.get("spec") or {}).get("listeners") or [{}])[0]
    scheme = "https" if listener.get("protocol") == "HTTPS" else "http"
    port = listener.get("port", 443 if scheme == "https" else 80)
    default = {"http": 80, "https": 443}[scheme]
    host = addresses[0]["value"]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


def llmisvc_url(service: dict) -> str | None:
    """The URL KServe publishes for an LLMInferenceService (status.url, else the first address)."""
    status = service.get("status") or {}
    if status.get("url"):
        return status["url"].rstrip("/")
    for address in status.get("addresses") or []:
        if address.get("url"):
            return address["url"].rstrip("/")
    return None


def kserve_endpoint(service: dict, body_routed: bool) -> str | None:
    """Where to send requests for a kserve deployment.

    One model: its published URL (KServe routes /<ns>/<name>/v1/... to it). Several models
    behind body-based routing: the gateway root, where the body's model picks the backend —
    the per-model URL would send everything to that one model.
    """
    url = llmisvc_url(service)
    if url and body_routed:
        parsed = urlparse(url)
        return f"{parsed.scheme}://{parsed.netloc}"
    return url


def gateway_service(services: list[dict], gateway: str) -> tuple[str, int] | None:
    """The Service a Gateway implementation created for `gateway` (name, HTTP port)."""
    for svc in services:
        labels = (svc.get("metadata") or {}).get("labels") or {}
        if labels.get(GATEWAY_NAME_LABEL) == gateway:
            ports = (svc.get("spec") or {}).get("ports") or []
            port = next((p["port"] for p in ports if p.get("port") in (80, 8080)), ports[0]["port"] if ports else 80)
            return svc["metadata"]["name"], port
    return None


def reachable(url: str, timeout: float = 3) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def discover(plan: Plan, kube_context: str | None):
    """Yield the URL of the deployed pattern, port-forwarding to the gateway when needed."""
    from kubernetes import client, config

    from lightrail.portforward import port_forward

    try:
        config.load_kube_config(context=kube_context)
    except Exception as err:  # the kubernetes client raises several types for a missing/bad kubeconfig
        raise LightrailError(f"cannot load the kube config{f' context {kube_context!r}' if kube_context else ''}: {err}",
                             fix="pass --url=URL, or --kube-context=NAME of a reachable cluster") from None
    api = client.CustomObjectsApi()
    ns = plan.namespace
    if plan.stack == "llmd":
        gateway_name = plan.gateway.name
        gw = api.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "gateways", gateway_name)
        url = gateway_url(gw)
    else:
        gateway_name = "kserve-ingress-gateway"
        isvc = api.get_namespaced_custom_object("serving.kserve.io", "v1alpha2", ns, "llminferenceservices",
                                                plan.servers[0].name)
        url = kserve_endpoint(isvc, plan.body_based_routing)
    if url and reachable(url):
        yield url
        return
    services = client.CoreV1Api().list_service_for_all_namespaces(
        label_selector=f"{GATEWAY_NAME_LABEL}={gateway_name}").to_dict()["items"]
    target = gateway_service(services, gateway_name)
    if not target:
        raise LightrailError(f"gateway {gateway_name} has no reachable address and no Service to port-forward to",
                             fix="check `invoke status`, or pass --url")
    svc_ns = next(s["metadata"]["namespace"] for s in services if s["metadata"]["name"] == target[0])
    with port_forward(f"svc/{target[0]}", target[1], namespace=svc_ns, kube_context=kube_context) as local:
        yield local + (urlparse(url).path if url else "")
