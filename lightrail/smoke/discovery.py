"""Find the endpoint users hit, from the objects a deployment created.

Pure functions read API objects (dicts); `discover` is the thin part that asks the cluster,
and falls back to a managed `kubectl port-forward` when the address is not reachable here.
"""
from __future__ import annotations

import socket
from contextlib import ExitStack, contextmanager
from urllib.parse import urlparse

from lightrail.errors import LightrailError
from lightrail.llmd.values import server_labels
from lightrail.ops.objects import GATEWAY_NAME_LABEL, STACK_LABEL
from lightrail.plan import KSERVE_GATEWAY, ModelServer, Plan, build_plan, front_route

# The labels KServe v0.20 gives the pods of an LLMInferenceService that take requests
# (single-node pods and LWS leaders), besides app.kubernetes.io/name=<service name>.
KSERVE_WORKLOAD = {"app.kubernetes.io/part-of": "llminferenceservice", "kserve.io/component": "workload"}


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


def server_pod_labels(plan: Plan, server: ModelServer) -> dict[str, str]:
    """The labels its InferencePool selects the pods running one model's vLLM by (not the picker or gateway)."""
    return server_labels(server) if plan.stack == "llmd" else {"app.kubernetes.io/name": server.name, **KSERVE_WORKLOAD}


def server_selector(plan: Plan, server: ModelServer) -> str:
    return ",".join(f"{k}={v}" for k, v in server_pod_labels(plan, server).items())


def metrics_endpoint(pod: dict) -> tuple[str, str, int] | None:
    """(scheme, pod IP, port) of a running pod's vLLM, or None while it is not running.

    vLLM is the first container (sidecars such as KServe's routing proxy are init containers);
    its first port is vLLM's own, and its probes say whether it serves HTTPS (KServe's TLS).
    """
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return None
    container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
    ports = container.get("ports") or []
    if not ports:
        return None
    probe = container.get("readinessProbe") or container.get("livenessProbe") or {}
    scheme = ((probe.get("httpGet") or {}).get("scheme") or "HTTP").lower()
    return scheme, status["podIP"], ports[0]["containerPort"]


def reachable(url: str, timeout: float = 3) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kube_api(kube_context: str | None):
    """An API client for the kube context, and a function making its answers API-shaped dicts."""
    from kubernetes import client, config

    from lightrail.ops.cluster import kubeconfig_file

    try:
        config.load_kube_config(config_file=kubeconfig_file(), context=kube_context)
    except Exception as err:  # the kubernetes client raises several types for a missing/bad kubeconfig
        raise LightrailError(f"cannot load the kube config{f' context {kube_context!r}' if kube_context else ''}: {err}",
                             fix="pass --url=URL, or --kube-context=NAME of a reachable cluster") from None
    api = client.ApiClient()
    return api, api.sanitize_for_serialization


def _ask(what: str, call, plan: Plan):
    """One cluster call; what the API server or the network said becomes a one-line error."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call()
    except ApiException as err:
        if err.status == 404:
            raise LightrailError(f"{what} not found in namespace {plan.namespace}: pattern {plan.pattern.name} is "
                                 f"not deployed there with --stack={plan.stack}",
                                 fix="deploy it, or pass --namespace, --stack or --url") from None
        raise LightrailError(f"the cluster refused to read {what}: HTTP {err.status} {err.reason}") from None
    except HTTPError as err:
        reason = getattr(err, "reason", None) or err           # MaxRetryError wraps the last attempt's error
        cause = reason.__cause__ if isinstance(reason.__cause__, OSError) else reason
        detail = getattr(cause, "strerror", None) or str(cause)
        raise LightrailError(f"cannot reach the cluster's API server to read {what}: {detail}",
                             fix="check the kube context, or pass --url") from None


def as_deployed(plan: Plan, kube_context: str | None) -> Plan:
    """The plan as the deployment runs. After a migration it is served through its front route on
    the Gateway it migrated onto (Request.front), which decides where it answers and, for
    multimodel, the model names clients send there; its first model's front route, labelled with
    its stack, says so. No such route, or none readable: the plan as given (discovery's own reads
    then name an unreachable or refusing API server)."""
    from dataclasses import replace

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api, plain = _kube_api(kube_context)
    try:
        route = plain(client.CustomObjectsApi(api).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", plan.namespace, "httproutes", front_route(plan.servers[0])))
    except (ApiException, HTTPError):
        return plan
    if (route["metadata"].get("labels") or {}).get(STACK_LABEL) != plan.stack:
        return plan     # the other side's, in the middle of a migration
    parent = next(p for p in route["spec"]["parentRefs"] if p.get("kind", "Gateway") == "Gateway")
    return build_plan(replace(plan.request, front=f"{parent.get('namespace') or plan.namespace}/{parent['name']}"))


@contextmanager
def discover(plan: Plan, kube_context: str | None):
    """Yield the URL of the deployed pattern, port-forwarding to the gateway when needed."""
    from kubernetes import client

    from lightrail.portforward import port_forward

    api, plain = _kube_api(kube_context)
    custom = client.CustomObjectsApi(api)
    ns = plan.namespace
    if plan.stack == "llmd":
        gateway_name = plan.gateway.name
        gw = _ask(f"Gateway {gateway_name}", lambda: custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", plan.gateway.namespace or ns, "gateways", gateway_name), plan)
        url = gateway_url(gw)
    else:
        gateway_name = KSERVE_GATEWAY[1]
        name = plan.servers[0].name
        isvc = _ask(f"LLMInferenceService {name}", lambda: custom.get_namespaced_custom_object(
            "serving.kserve.io", "v1alpha2", ns, "llminferenceservices", name), plan)
        url = kserve_endpoint(isvc, plan.body_based_routing)
    if url and reachable(url):
        yield url
        return
    core = client.CoreV1Api(api)
    services = plain(_ask(f"the Service of gateway {gateway_name}", lambda: core.list_service_for_all_namespaces(
        label_selector=f"{GATEWAY_NAME_LABEL}={gateway_name}"), plan))["items"]
    target = gateway_service(services, gateway_name)
    if not target:
        raise LightrailError(f"gateway {gateway_name} has no reachable address and no Service to port-forward to",
                             fix="check `invoke status`, or pass --url")
    svc_ns = next(s["metadata"]["namespace"] for s in services if s["metadata"]["name"] == target[0])
    with port_forward(f"svc/{target[0]}", target[1], namespace=svc_ns, kube_context=kube_context) as local:
        yield local + (urlparse(url).path if url else "")


@contextmanager
def server_metrics(plan: Plan, kube_context: str | None):
    """Yield the /metrics URLs of every running model-server pod (for the prefix-cache check).

    A pod IP this machine reaches (smoke in the cluster, or on its network) is used directly;
    otherwise each pod gets a managed port-forward. HTTPS pods always do: KServe's certificate
    names the service, not the IP, and metrics.scrape trusts only a port-forward's local end.
    """
    from kubernetes import client

    from lightrail.portforward import port_forward

    api, plain = _kube_api(kube_context)
    core = client.CoreV1Api(api)
    pods = [pod for server in plan.servers
            for pod in plain(_ask(f"the pods of {server.name}", lambda s=server: core.list_namespaced_pod(
                plan.namespace, label_selector=server_selector(plan, s)), plan))["items"]]
    targets = [(pod["metadata"]["name"], endpoint) for pod in pods if (endpoint := metrics_endpoint(pod))]
    if not targets:
        raise LightrailError(f"no running model-server pods of pattern {plan.pattern.name} in namespace "
                             f"{plan.namespace} to read metrics from",
                             fix="wait until they run (`kubectl get pods`), or pass --metrics-url")
    with ExitStack() as stack:
        urls = []
        for name, (scheme, ip, port) in targets:
            direct = f"http://{f'[{ip}]' if ':' in ip else ip}:{port}"
            if scheme == "http" and reachable(direct, timeout=1):
                urls.append(f"{direct}/metrics")
            else:
                local = stack.enter_context(port_forward(f"pod/{name}", port, namespace=plan.namespace,
                                                         kube_context=kube_context))
                urls.append(f"{scheme}{local.removeprefix('http')}/metrics")
        yield urls
