"""A local Kubernetes API server that answers reads from recorded objects: the cluster boundary.

No machine here has a cluster, so tests of the thin cluster-facing code (discovery, status)
point a real kubeconfig at this: the real kubernetes client then makes its real HTTP calls
(GET an object, list with a label selector) and gets real-shaped answers, or a NotFound Status.
Only reads are served; anything else answers 405.
"""
from __future__ import annotations

import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml


def _prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def _matches(labels: dict, selector: str) -> bool:
    """Equality-based label selectors (k=v,k2=v2), the only kind Lightrail sends."""
    pairs = [term.split("=", 1) for term in selector.split(",") if term]
    return all(labels.get(k) == v for k, v in pairs)


CORE_KINDS = ("Pod", "Service", "Secret", "ConfigMap", "Namespace", "Node")
CLUSTER_SCOPED = ("Namespace", "Node")


class FakeKubeAPI:
    """`with FakeKubeAPI([gateway, pod, ...]) as api: KUBECONFIG=api.kubeconfig`; api.requests and api.writes
    record what a command asked for."""

    def __init__(self, objects: list[dict], discovery: bool = False):
        self.objects = objects
        self.serves_discovery = discovery   # answer /api and /apis, which the dynamic client (status, doctor) needs
        self.requests: list[str] = []   # paths of the reads
        self.writes: list[str] = []     # "METHOD path" of every refused write
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.kubeconfig = Path(tempfile.mkstemp(prefix="kubeconfig-", suffix=".yaml")[1])
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict]:
        """(status, body) for a GET, the way the API server would answer it."""
        found = self.discovery(path.rstrip("/")) if self.serves_discovery else None
        if found is not None:
            return 200, found
        if path.rstrip("/") == "/version":
            return 200, {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "fake",
                         "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
                         "compiler": "gc", "platform": "linux/amd64"}
        parts = path.strip("/").split("/")
        api_version, rest = ("v1", parts[2:]) if parts[:2] == ["api", "v1"] else ("/".join(parts[1:3]), parts[3:])
        namespace, rest = (rest[1], rest[2:]) if rest[:1] == ["namespaces"] and len(rest) > 2 else (None, rest)
        plural, name = (rest + [None])[:2] if 1 <= len(rest) <= 2 else (None, None)
        found = [o for o in self.objects if o["apiVersion"] == api_version and o["kind"].lower() + "s" == plural
                 and namespace in (None, o["metadata"].get("namespace"))]
        if name is None and plural:
            selector = (query.get("labelSelector") or [""])[0]
            items = [o for o in found if _matches(o["metadata"].get("labels") or {}, selector)]
            return 200, {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}
        for obj in found:
            if obj["metadata"]["name"] == name:
                return 200, obj
        return 404, {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                     "message": f"{plural} {name!r} not found"}

    def discovery(self, path: str) -> dict | None:
        """What the dynamic client asks first: API groups and the kinds they serve (core kinds, plus the
        kinds of the recorded objects), or None when `path` is not a discovery path."""
        kinds = {(o["apiVersion"], o["kind"]): bool(o["metadata"].get("namespace")) for o in self.objects}
        kinds.update({("v1", k): k not in CLUSTER_SCOPED for k in CORE_KINDS})
        group_versions = sorted({gv for gv, _ in kinds if "/" in gv})
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = [{"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                       "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in group_versions]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        gv = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        if (path == "/api/v1" or path.startswith("/apis/")) and gv in ["v1", *group_versions]:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": k.lower() + "s", "singularName": k.lower(), "namespaced": namespaced, "kind": k,
                 "verbs": ["get", "list", "watch"]} for (v, k), namespaced in sorted(kinds.items()) if v == gv]}
        return None

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                api.requests.append(self.path)
                status, body = api.answer(url.path, parse_qs(url.query))
                self._send(status, body)

            def do_POST(self):
                api.writes.append(f"{self.command} {self.path}")
                self._send(405, {"kind": "Status", "status": "Failure", "code": 405, "message": "read-only"})

            do_PUT = do_PATCH = do_DELETE = do_POST

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self) -> "FakeKubeAPI":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.kubeconfig.unlink(missing_ok=True)
