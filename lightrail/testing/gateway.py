"""A model of one Gateway's DATA PLANE, driven by the real API server, forwarding to real vLLMs.

No Envoy runs here, yet a migration must be proven under traffic. This server acts like a Gateway
API implementation for one Gateway: it watches HTTPRoutes attached to it, InferencePools
(and Services) and Pods, routes each request by the spec's rules (testing/routing.py) and
forwards it to the real upstream standing in for the chosen pool, streaming the answer back.

What it makes observable, because real gateways behave so:
- configuration converges late: a change takes effect `propagation_delay` seconds after its
  watch event (the migrator must wait for propagation);
- a backendRef to an object that does not exist -> 500; a pool without ready endpoints -> 503;
- a pod's death is physical, not propagated: each request goes to one pod of its pool (picked
  among the endpoints the data plane knows); when that pod stops running, the request breaks (a
  truncated stream, or 503 before the headers, as Envoy answers), and a request the stale
  configuration still sends to a dead pod gets 503.

Like a gateway proxy it counts requests at `metrics_url` (port 15020's /stats/prometheus), by
backend and the response code sent to the client (a stream broken after its headers keeps its
200), with the counter of `counters`: Istio's `istio_requests_total` by destination Service (an
InferencePool's shadow Service; a client gone before the answer counts as code 0), or
agentgateway's `agentgateway_requests_total` in OpenMetrics text, by the backend's hostname and port
(an InferencePool's `<pool>.<namespace>.inference.cluster.local`; no status: "unknown"), with the
labels this model knows of the real ones (lightrail/migrate/gatewaymetrics.py says where they are
defined).
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import aiohttp
from aiohttp import web

from lightrail.errors import LightrailError
from lightrail.migrate.gatewaymetrics import shadow_service
from lightrail.router import MODEL_HEADER
from lightrail.testing import kubewatch, routing
from lightrail.testing.vllm import free_port

COUNTERS = ("istio", "agentgateway")     # whose request counter the model's proxy keeps
BACKEND_HEADER = "x-lightrail-backend"     # the pool ("namespace/name") a request went to
ENDPOINT_HEADER = "x-lightrail-endpoint"   # ... and its pod ("namespace/name")
POOL_GROUP = "inference.networking.k8s.io"
WATCHED = {
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/httproutes",
    "InferencePool": "/apis/inference.networking.k8s.io/v1/inferencepools",
    "Service": "/api/v1/services",
    "Pod": "/api/v1/pods",
}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
UPSTREAM_IDLE = 2.0    # seconds an idle upstream connection is kept for reuse
RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


@dataclass
class BackendStats:
    """Requests the gateway sent to one backend: relayed to the end, failed (by the gateway or a
    broken upstream), or cancelled by the client hanging up."""
    started: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def in_flight(self) -> int:
        return self.started - self.finished - self.failed - self.cancelled


class ClusterView:
    """The objects of the watched kinds, by kind then (namespace, name)."""

    def __init__(self):
        self.objects: dict[str, dict[tuple[str, str], dict]] = {kind: {} for kind in WATCHED}

    def apply(self, kind: str, event: str, payload) -> None:
        if event == "SYNC":
            self.objects[kind] = {_key(o): o for o in payload}
        elif event == "DELETED":
            self.objects[kind].pop(_key(payload), None)
        else:
            self.objects[kind][_key(payload)] = payload

    def routes(self, namespace: str, name: str) -> list[dict]:
        return [r for r in self.objects["HTTPRoute"].values() if routing.attached(r, namespace, name)]

    def selector(self, ref: dict, namespace: str) -> dict | None:
        """The pod labels a backendRef selects, or None when it names nothing that exists (or a kind
        this gateway cannot send to)."""
        group, kind = ref.get("group", ""), ref.get("kind", "Service")
        if (group, kind) == (POOL_GROUP, "InferencePool"):
            pool = self.objects["InferencePool"].get((namespace, ref["name"]))
            return None if pool is None else ((pool.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if (group, kind) == ("", "Service"):
            svc = self.objects["Service"].get((namespace, ref["name"]))
            return None if svc is None else (svc.get("spec") or {}).get("selector") or {}
        return None

    def endpoints(self, namespace: str, selector: dict) -> list[tuple[str, str]]:
        """Pods of the namespace matching a (non-empty) selector that run and are Ready."""
        if not selector:
            return []
        found = []
        for key, pod in self.objects["Pod"].items():
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if key[0] == namespace and all(labels.get(k) == v for k, v in selector.items()) \
                    and _running(pod) and _ready(pod):
                found.append(key)
        return sorted(found)

    def running(self, pod: tuple[str, str]) -> bool:
        return pod in self.objects["Pod"] and _running(self.objects["Pod"][pod])


class GatewayModel:
    """`with GatewayModel(kubeconfig, context, ("ns", "gw"), {("ns", "pool"): vllm.url}) as gw: gw.url`"""

    def __init__(self, kubeconfig: str | Path, context: str, gateway: tuple[str, str],
                 backends: Mapping[tuple[str, str], str], *, propagation_delay: float = 1.0,
                 seed: int | None = None, body_router: tuple[str, str] | None = None, counters: str = "istio"):
        if counters not in COUNTERS:
            raise ValueError(f"counters: {counters!r}; valid: {', '.join(COUNTERS)}")
        self.counters = counters
        self.api = kubewatch.ApiAccess(kubeconfig, context)
        self.gateway = gateway
        self.backends = dict(backends)
        self.propagation_delay = propagation_delay
        # (namespace, name) of the Service of a body-based router acting on this Gateway (multimodel): llmd's
        # beside its Gateway; the kserve stack's in the deployment's namespace, wired by its EnvoyFilter
        self.body_router = body_router
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/stats/prometheus"
        self._codes: dict[tuple[str, str, str], int] = defaultdict(int)   # (*backend as counted, code) -> requests
        self.now = ClusterView()       # the cluster as it is (pods live or die at once)
        self.seen = ClusterView()      # the cluster as the data plane is configured (late)
        self._stats: dict[str, BackendStats] = defaultdict(BackendStats)
        self._flights: set[_Flight] = set()
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task] = []
        self._problems: dict[str, str] = {}      # watch path -> last error (why a start timed out)
        self._propagating = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> "GatewayModel":
        self._thread.start()
        starting = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            starting.result(timeout)
        except Exception as err:
            starting.cancel()
            self.stop()
            why = "; ".join(f"{path}: {problem}" for path, problem in self._problems.items()) or repr(err)
            raise LightrailError(f"gateway model could not start against {self.api.host}: {why}") from None
        return self

    async def _start(self) -> None:
        self._changes: asyncio.Queue = asyncio.Queue()
        # Idle upstream connections are dropped before the upstream drops them (vLLM closes one idle for
        # VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s): a request sent on a connection the upstream is closing at that
        # moment fails before its headers, as Envoy's do unless its idle timeout is the shorter one.
        self._upstream = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                                               connector=aiohttp.TCPConnector(keepalive_timeout=UPSTREAM_IDLE),
                                               auto_decompress=False)
        self._api_session = aiohttp.ClientSession()
        synced = []
        for kind, path in WATCHED.items():
            done = asyncio.Event()
            synced.append(done)
            handle = (lambda k: lambda event, payload: self._observe(k, event, payload))(kind)
            self._tasks.append(asyncio.ensure_future(kubewatch.list_and_watch(self._api_session, self.api, path,
                                                                              handle, done, self._problems)))
        await asyncio.gather(*(s.wait() for s in synced))
        self._propagating = True
        self._tasks.append(asyncio.ensure_future(self._propagate()))
        self._runner = web.ServerRunner(web.Server(self._handle), shutdown_timeout=2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._metrics_runner = web.ServerRunner(web.Server(self._metrics), shutdown_timeout=1)
        await self._metrics_runner.setup()
        await web.TCPSite(self._metrics_runner, "127.0.0.1", self.metrics_port).start()

    def stop(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in ("_runner", "_metrics_runner"):
            if getattr(self, runner, None):
                await getattr(self, runner).cleanup()
        for session in ("_upstream", "_api_session"):
            if getattr(self, session, None):
                await getattr(self, session).close()

    def __enter__(self) -> "GatewayModel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict[str, BackendStats]:
        """Counters per backend ("namespace/name"), a copy."""
        return {k: replace(v) for k, v in list(self._stats.items())}

    # --- configuration --------------------------------------------------------------------

    def _observe(self, kind: str, event: str, payload) -> None:
        """A watch event: the cluster changes now; the data plane follows after the delay."""
        self.now.apply(kind, event, payload)
        if kind == "Pod":
            for flight in list(self._flights):
                if not self.now.running(flight.pod):
                    flight.killed.set()
        if self._propagating:
            self._changes.put_nowait((self._loop.time() + self.propagation_delay, kind, event, payload))
        else:
            self.seen.apply(kind, event, payload)     # what existed before the gateway started

    async def _propagate(self) -> None:
        while True:
            due, kind, event, payload = await self._changes.get()
            await asyncio.sleep(max(0.0, due - self._loop.time()))
            self.seen.apply(kind, event, payload)

    # --- data plane -----------------------------------------------------------------------

    def _counted_as(self, ref: dict, namespace: str, name: str) -> tuple[str, str]:
        """The backend as the proxy's counter names it: Istio by (namespace, Service it sends to);
        agentgateway by (hostname, port)."""
        pool = ref.get("kind") == "InferencePool"
        if self.counters == "istio":
            return namespace, shadow_service(name) if pool else name
        if pool:
            spec = (self.seen.objects["InferencePool"].get((namespace, name)) or {}).get("spec") or {}
            port = (spec.get("targetPorts") or [{}])[0].get("number")
            return f"{name}.{namespace}.inference.cluster.local", str(port)
        return f"{name}.{namespace}.svc.cluster.local", str(ref.get("port"))

    def _count(self, backend: tuple[str, str], code: int) -> None:
        self._codes[(*backend, str(code))] += 1

    async def _metrics(self, request: web.BaseRequest) -> web.Response:
        """The request counter as the proxy of `counters` reports it."""
        if request.path != "/stats/prometheus":
            return web.Response(status=404, text="not found\n")
        if self.counters == "agentgateway":
            lines = ["# HELP agentgateway_requests The total number of HTTP requests sent.",
                     "# TYPE agentgateway_requests counter"]
            for (host, port, code), n in sorted(self._codes.items()):
                status = code if code != "0" else "unknown"
                lines.append(f'agentgateway_requests_total{{backend="{host}:{port}",status="{status}",'
                             f'gateway="{self.gateway[0]}/{self.gateway[1]}"}} {n}')
            return web.Response(text="\n".join([*lines, "# EOF"]) + "\n", content_type="application/openmetrics-text")
        lines = ["# HELP istio_requests_total Total requests.", "# TYPE istio_requests_total counter"]
        for (namespace, service, code), n in sorted(self._codes.items()):
            lines.append(f'istio_requests_total{{reporter="source",destination_service="{service}.{namespace}.svc.'
                         f'cluster.local",destination_service_name="{service}",destination_service_namespace='
                         f'"{namespace}",response_code="{code}"}} {n}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        path = request.raw_path.split("?", 1)[0]
        if self.body_router:
            await self._route_by_body(request, headers)
        choice = routing.select(self.seen.routes(*self.gateway),
                                routing.Request(request.method, path, headers, dict(request.query), request.url.host or ""))
        ref = choice and routing.pick_backend(choice.rule.get("backendRefs") or [], self._rng)
        if ref is None:
            return _reply(404, "no route matches the request") if choice is None else \
                _reply(500, "the rule has no backendRef with a weight above 0")
        route_ns = choice.route["metadata"]["namespace"]
        namespace, name = ref.get("namespace", route_ns), ref["name"]
        label = f"{namespace}/{name}"
        stats = self._stats[label]
        stats.started += 1
        count = partial(self._count, self._counted_as(ref, namespace, name))
        selector = self.seen.selector(ref, namespace) if namespace == route_ns else None
        upstream = self.backends.get((namespace, name))
        known = self.seen.endpoints(namespace, selector) if selector is not None else []
        pod = self._rng.choice(known) if known else None
        problem = (
            (500, f"backendRef {ref.get('kind', 'Service')} {label} does not exist (or is in another namespace: "
                  "ReferenceGrants are not modelled)") if selector is None else
            (503, "no healthy upstream") if pod is None else
            (503, RESET_BEFORE_HEADERS) if not self.now.running(pod) else
            (500, f"the gateway model has no upstream URL for {label}") if upstream is None else None)
        if problem:
            stats.failed += 1
            count(problem[0])
            return _reply(*problem, backend=label)
        forward_path, forward_headers = routing.apply_filters(
            [*(choice.rule.get("filters") or []), *(ref.get("filters") or [])], choice.match, path,
            {k: v for k, v in headers.items() if k not in HOP_BY_HOP})
        query = request.rel_url.raw_query_string
        url = f"{upstream.rstrip('/')}{forward_path}{'?' + query if query else ''}"
        return await self._forward(request, url, forward_headers, _Flight(pod, label, stats, count))

    async def _route_by_body(self, request: web.BaseRequest, headers: dict[str, str]) -> None:
        """What the body-based router (an ext-proc on the Gateway) does: the body's `model` into the
        model header the routes match - while its Service exists as the data plane sees it. Without
        it, no header: a request for a model-matching route finds no rule (404)."""
        if self.body_router not in self.seen.objects["Service"]:
            return
        try:
            model = json.loads(await request.read()).get("model")
        except (ValueError, AttributeError):
            return
        if isinstance(model, str):
            headers[MODEL_HEADER.lower()] = model

    async def _forward(self, request, url, headers, flight: _Flight) -> web.StreamResponse:
        """Relay to the upstream until it ends, the client leaves, or the backend's pods die."""
        body = await request.read()
        self._flights.add(flight)
        relay = asyncio.ensure_future(self._relay(request, url, body, headers, flight))
        killed = asyncio.ensure_future(flight.killed.wait())
        try:
            await asyncio.wait({relay, killed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._flights.discard(flight)
            killed.cancel()
        if not relay.done():
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            flight.settle("failed")
        if flight.response is None:
            flight.count(0 if flight.outcome == "cancelled" else 503)
            return _reply(503, RESET_BEFORE_HEADERS, backend=flight.label)
        if flight.outcome == "failed" and request.transport:
            request.transport.abort()      # headers already sent: the client sees a truncated stream
        return flight.response

    async def _relay(self, request, url, body, headers, flight: _Flight) -> None:
        try:
            async with self._upstream.request(request.method, url, data=body, headers=headers,
                                              allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    **{k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
                    BACKEND_HEADER: flight.label, ENDPOINT_HEADER: "/".join(flight.pod)})
                await response.prepare(request)
                flight.response = response
                flight.count(upstream.status)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                flight.settle("finished")
                await response.write_eof()
        except ConnectionResetError:
            flight.settle("cancelled")      # the client hung up (aiohttp's reset error is also a ClientError)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            flight.settle("failed")         # the upstream refused or broke mid-way


@dataclass(eq=False)
class _Flight:
    """A request being relayed to one pod (namespace, name) of a backend."""
    pod: tuple[str, str]
    label: str
    stats: BackendStats
    count: Callable[[int], None]   # the response code sent to the client, counted once

    def __post_init__(self):
        self.killed = asyncio.Event()
        self.response: web.StreamResponse | None = None    # once the headers are sent
        self.outcome: str | None = None

    def settle(self, outcome: str) -> None:
        """Count the request once, by its first outcome. A complete answer counts before its last
        byte leaves, so a client holding the answer reads counters that include it."""
        if self.outcome is None:
            self.outcome = outcome
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)


def _reply(status: int, text: str, backend: str | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={BACKEND_HEADER: backend} if backend else None)


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
