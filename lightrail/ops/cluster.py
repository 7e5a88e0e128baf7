"""The one place that talks to a cluster: reads, watches, the token Secret, and the pinned tools.

Thin on purpose. Every decision is made elsewhere from what these methods return (plain
dicts, as the API serves them); tests replace this class with an in-memory one. Secrets are
read without their data, so no observation ever holds a secret value.
"""
from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import yaml

from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.ops.secrets import SECRET_KEY, Token

REQUEST_TIMEOUT = 30      # seconds for one API request
READ_RETRY = 45           # seconds a read keeps retrying a refused connection (an API-server restart)
WATCH_WINDOW = 60         # seconds one watch request stays open before it is renewed


def kubeconfig_paths() -> list[Path]:
    """The kubeconfig files kubectl would read: $KUBECONFIG's list, else ~/.kube/config."""
    return [Path(p).expanduser() for p in (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep) if p]


def kubeconfig_contexts() -> tuple[list[str], str | None]:
    """Context names in the kubeconfig files and the current one, merged the way kubectl merges them.

    A missing file is skipped (as kubectl does); a file that cannot be used is an error naming it.
    """
    names: list[str] = []
    current = None
    for path in kubeconfig_paths():
        if not path.exists():
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except IsADirectoryError:
            raise LightrailError(f"kubeconfig {path} is a directory; valid: a kubeconfig file "
                                 "(check KUBECONFIG)") from None
        except OSError as err:
            raise LightrailError(f"cannot read kubeconfig {path}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise LightrailError(f"kubeconfig {path} is not a text file (UTF-8 YAML); valid: a kubeconfig file "
                                 "(check KUBECONFIG)") from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where else ""
            raise LightrailError(f"kubeconfig {path} is not valid YAML{line}") from None
        problem = _shape_problem(data)
        if problem:
            raise LightrailError(f"kubeconfig {path} is not a kubeconfig ({problem})")
        names += [c["name"] for c in data.get("contexts") or [] if c["name"] not in names]
        current = current or data.get("current-context") or None
    return names, current


def _shape_problem(data) -> str | None:
    """What kubectl would choke on in one kubeconfig file: not a mapping, or entries without a name."""
    if not isinstance(data, dict):
        return f"expected a mapping with contexts:, got {type(data).__name__}"
    for field in ("contexts", "clusters", "users"):
        entries = data.get(field) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("name") and isinstance(e["name"], str)
                                                    for e in entries):
            return f"{field}: expected a list of entries with a name, got {entries!r:.60}"
    return None


class KubeCluster:
    def __init__(self, context: str):
        from kubernetes import config

        self.context = context
        try:
            self._api = config.new_client_from_config(config_file=kubeconfig_file(), context=context)
        except Exception as err:  # the client raises several types for a missing or bad kubeconfig
            raise LightrailError(f"cannot load kube context {context!r}: {err}") from None
        self._dynamic = None
        self._rediscovered: set[tuple[str, str]] = set()

    # --- reads ----------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version; raises LightrailError when the cluster does not answer."""
        from kubernetes import client

        try:
            return client.VersionApi(self._api).get_code(_request_timeout=REQUEST_TIMEOUT).git_version
        except Exception as err:  # connection refused, TLS, auth: all mean "not reachable as configured"
            raise LightrailError(f"cluster of context {self.context!r} is not reachable: {_short(err)}") from None

    @property
    def dynamic(self):
        """The dynamic client, with discovery cached for this object only: the client's default cache
        is one file per server URL shared by every process, so a new cluster at a reused address
        (or CRDs removed since) would be served another cluster's kinds."""
        if self._dynamic is None:
            from kubernetes import dynamic

            self.version()   # fail fast: discovery below has no timeout of its own
            self._discovery = tempfile.TemporaryDirectory(prefix="lightrail-discovery-")
            self._dynamic = dynamic.DynamicClient(self._api, cache_file=str(Path(self._discovery.name) / "cache.json"))
        return self._dynamic

    def _resource(self, api_version: str, kind: str):
        """The served resource of a kind, or None; a kind not seen at discovery is looked up once more,
        since a CRD may have been installed since (prereqs, then deploy, in one `invoke up`)."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            if (api_version, kind) in self._rediscovered:
                return None
        self._rediscovered.add((api_version, kind))
        self.dynamic.resources.invalidate_cache()
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return None
        except LightrailError:
            raise
        except Exception as err:  # discovery refused or broken: say so instead of a traceback
            raise LightrailError(f"cluster of context {self.context!r}: API discovery failed: {_short(err)}") from None

    def list(self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
        """Objects of a kind ([] when the cluster does not serve the kind)."""
        res = self._resource(api_version, kind)
        if res is None:
            return []
        try:
            result = _reading(lambda: res.get(namespace=namespace, label_selector=selector,
                                              _request_timeout=REQUEST_TIMEOUT)).to_dict()
        except Exception as err:  # forbidden, timed out: one line naming what could not be read
            raise LightrailError(f"cluster of context {self.context!r}: cannot list {kind}"
                                 f"{f' in {namespace}' if namespace else ''}: {_short(err)}") from None
        items = result.get("items") or []
        for item in items:   # a list response omits these on its items
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return [_without_secret_data(i) for i in items]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        res = self._resource(api_version, kind)
        if res is None:
            return None
        try:
            return _without_secret_data(_reading(lambda: res.get(name=name, namespace=namespace,
                                                                 _request_timeout=REQUEST_TIMEOUT)).to_dict())
        except NotFoundError:
            return None
        except Exception as err:  # forbidden, timed out: one line naming what could not be read
            raise LightrailError(f"cluster of context {self.context!r}: cannot read {kind} {name}: {_short(err)}") from None

    def kinds(self) -> list[tuple[str, str, bool]]:
        """Every listable kind the cluster serves, once: (apiVersion, kind, namespaced), at its group's
        preferred version, or where the preferred one does not serve it at the version that does (Istio's
        EnvoyFilter is only v1alpha3 while networking.istio.io prefers v1). The client's discovery also
        yields a `ResourceList` per kind (`...List`, the list type itself): skipped, it cannot be listed."""
        from kubernetes.dynamic.resource import ResourceList

        found: dict[tuple[str, str], tuple[bool, str, bool]] = {}
        for res in self.dynamic.resources.search():
            if isinstance(res, ResourceList) or "list" not in (res.verbs or []) or "/" in res.name:
                continue
            key, preferred = (res.group, res.kind), bool(getattr(res, "preferred", False))
            if key not in found or (preferred and not found[key][0]):
                found[key] = (preferred, res.group_version, bool(res.namespaced))
        return sorted((version, kind, namespaced) for (_, kind), (_, version, namespaced) in found.items())

    def releases(self, namespace: str) -> list[dict]:
        """`helm list` of a namespace, every status."""
        out = tools.run("helm", f"--kube-context={self.context}", "list", "--namespace", namespace, "--all",
                        "--output", "json", timeout=REQUEST_TIMEOUT * 2).stdout
        return json.loads(out or "[]")

    def logs(self, namespace: str, pod: str, container: str, lines: int = 20) -> str:
        """The last lines of a container's previous run (the one that crashed)."""
        from kubernetes import client

        try:
            return client.CoreV1Api(self._api).read_namespaced_pod_log(
                pod, namespace, container=container, previous=True, tail_lines=lines, _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:  # a log that cannot be read is reported, not fatal
            return f"(log not available: {_short(err)})"

    def watch(self, specs: list[tuple[str, str, str]], stop: threading.Event) -> Iterator[tuple[str, dict | None]]:
        """Events of every (apiVersion, kind, namespace) in specs, merged; ("TICK", None) each second.

        One thread per watch feeds a queue; each watch starts with ADDED for what exists, and is
        renewed every WATCH_WINDOW seconds until `stop` is set.
        """
        events: queue.Queue = queue.Queue()

        def pump(api_version, kind, namespace):
            res = self._resource(api_version, kind)
            while res is not None and not stop.is_set():
                try:
                    for ev in self.dynamic.watch(res, namespace=namespace or None, timeout=WATCH_WINDOW):
                        events.put((ev["type"], _without_secret_data(ev["raw_object"])))
                        if stop.is_set():
                            return
                except Exception as err:  # a broken watch is renewed; the deadline still applies
                    events.put(("ERROR", {"message": _short(err)}))
                    stop.wait(2)

        for spec in dict.fromkeys(specs):
            threading.Thread(target=pump, args=spec, daemon=True).start()
        while not stop.is_set():
            try:
                yield events.get(timeout=1)
            except queue.Empty:
                yield "TICK", None

    # --- writes ---------------------------------------------------------------------------

    def apply_secret(self, obj: dict, token: Token) -> None:
        """Server-side apply the Secret with the token: the only place the value leaves memory."""
        body = {**obj, "stringData": {SECRET_KEY: token.reveal()}}
        try:
            res = self._resource("v1", "Secret")
            res.server_side_apply(body=body, name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"],
                                  field_manager="lightrail", force_conflicts=True, _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:  # whatever the API said, it must not carry the value out
            raise LightrailError(f"could not store Secret {obj['metadata']['name']}: {token.scrub(_short(err))}") from None

    def apply(self, obj: dict, field_manager: str) -> None:
        """Server-side apply one object through the client: for bookkeeping written many times a run (a
        migration's state), where a kubectl process each time cost about a second on a busy machine."""
        name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")
        res = self._resource(obj["apiVersion"], obj["kind"])
        if res is None:
            raise LightrailError(f"could not apply {obj['kind']} {name}: the cluster does not serve {obj['kind']}")
        try:
            res.server_side_apply(body=obj, name=name, namespace=namespace, field_manager=field_manager,
                                  force_conflicts=True, _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:  # refused, forbidden, timed out: one line naming what was not written
            raise LightrailError(f"could not apply {obj['kind']} {name}: {_short(err)}") from None

    def run(self, tool: str, args: tuple[str, ...], stdin: str | None = None, timeout: float = 300) -> str:
        return tools.run(tool, *args, input=stdin, timeout=timeout).stdout


def kubeconfig_file() -> str | None:
    """$KUBECONFIG as it is now (the client reads it once, at import), else the client's default."""
    return os.environ.get("KUBECONFIG") or None


def _without_secret_data(obj: dict) -> dict:
    """A Secret without its values (also the copy kubectl's client-side apply keeps in an annotation)."""
    if obj.get("kind") != "Secret":
        return obj
    out = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
    meta = dict(out.get("metadata") or {})
    notes = {k: v for k, v in (meta.get("annotations") or {}).items()
             if k != "kubectl.kubernetes.io/last-applied-configuration"}
    meta["annotations"] = notes
    out["metadata"] = meta
    return out


def _refused(err: BaseException) -> bool:
    """The API server did not take the connection (restarting, or its port not yet open)."""
    import urllib3

    reason = getattr(err, "reason", None) if isinstance(err, urllib3.exceptions.MaxRetryError) else err
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError,
                               ConnectionRefusedError, ConnectionResetError))


def _reading(call):
    """A read, retried while the API server refuses connections: the server answered discovery, so a
    refusal is a restart in progress, and the watches already ride those out. Writes are not retried."""
    import tenacity

    return tenacity.Retrying(retry=tenacity.retry_if_exception(_refused), stop=tenacity.stop_after_delay(READ_RETRY),
                             wait=tenacity.wait_exponential(multiplier=0.5, max=4), reraise=True)(call)


def _short(err: Exception) -> str:
    text = str(getattr(err, "reason", None) or err)
    return text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
