"""A recording Kubernetes API endpoint that holds nothing: for the CLI contract tests.

Their subject is that a refused command sends nothing to the cluster, and that a read-only command
asks the namespace it was given. A real API server keeps no per-request record a test could read
without an audit log, so this endpoint records every request path instead: it answers the version,
discovery of the core kinds (what the dynamic client asks first), empty lists and NotFound, and
refuses every write with 405. Cluster behaviour itself is tested against the real local control
plane in tests/e2e/.
"""
from __future__ import annotations

import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import yaml

CORE_KINDS = {"Pod": "pods", "Service": "services", "Secret": "secrets", "ConfigMap": "configmaps",
              "Namespace": "namespaces", "Node": "nodes"}
CLUSTER_SCOPED = ("Namespace", "Node")
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "recorder", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}


def answer(path: str) -> tuple[int, dict]:
    """(status, body) for a GET of `path`."""
    path = path.rstrip("/")
    if path == "/version":
        return 200, VERSION
    if path == "/api":
        return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
    if path == "/api/v1":
        return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": kind not in CLUSTER_SCOPED, "kind": kind,
             "verbs": ["get", "list", "watch"]} for kind, plural in CORE_KINDS.items()]}
    if path.split("/")[-1] in CORE_KINDS.values():
        return 200, {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}
    return 404, {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                 "message": f"{path} not found"}


class RecordingKubeAPI:
    """`with RecordingKubeAPI() as api: KUBECONFIG=api.kubeconfig`; then api.requests (paths read) and
    api.writes ("METHOD path" of every refused write)."""

    def __init__(self):
        self.requests: list[str] = []
        self.writes: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.kubeconfig = Path(tempfile.mkstemp(prefix="kubeconfig-", suffix=".yaml")[1])
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append(self.path)
                self._send(*answer(urlparse(self.path).path))

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

    def __enter__(self) -> "RecordingKubeAPI":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.kubeconfig.unlink(missing_ok=True)
