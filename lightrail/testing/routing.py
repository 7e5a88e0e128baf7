"""Gateway API HTTPRoute semantics as pure functions, for the gateway model (testing/gateway.py).

Which rule a request takes across every route attached to one Gateway, which backendRef of that
rule, and how the rule's filters change the request — as the Gateway API spec (v1) defines them,
so tests of a migration observe what a conformant gateway would do, not what we wish it did.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}


@dataclass(frozen=True)
class Request:
    method: str
    path: str                                   # without the query string
    headers: Mapping[str, str]                  # names lower-case
    query: Mapping[str, str] = field(default_factory=dict)
    host: str = ""                              # the Host header without its port


@dataclass(frozen=True)
class Choice:
    """The winning match: the route, the rule (index and body) and the match that made it win."""
    route: dict
    rule_index: int
    rule: dict
    match: dict


def attached(route: dict, gateway_namespace: str, gateway_name: str) -> bool:
    """A parentRef naming the Gateway (namespace defaults to the route's, kind to Gateway)."""
    meta = route.get("metadata") or {}
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if (ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and ref.get("kind", "Gateway") == "Gateway"
                and ref.get("name") == gateway_name
                and ref.get("namespace", meta.get("namespace")) == gateway_namespace):
            return True
    return False


def _prefix(value: str) -> str:
    """A PathPrefix value without its trailing slash: matching is by path element, `/abc/` = `/abc`."""
    return value.rstrip("/")


def path_matches(path_match: dict, path: str) -> bool:
    kind, value = path_match.get("type", "PathPrefix"), path_match.get("value", "/")
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        prefix = _prefix(value)
        return path == prefix or path.startswith(prefix + "/")
    if kind == "RegularExpression":           # implementation-specific in the spec; full match here
        return re.fullmatch(value, path) is not None
    return False


def _value_matches(spec: dict, actual: str | None) -> bool:
    if actual is None:
        return False
    if spec.get("type", "Exact") == "RegularExpression":
        return re.fullmatch(spec["value"], actual) is not None
    return actual == spec["value"]


def matches(match: dict, request: Request) -> bool:
    """Every condition of one HTTPRouteMatch holds (they are ANDed)."""
    if not path_matches(match.get("path") or DEFAULT_MATCH["path"], request.path):
        return False
    if match.get("method") and match["method"] != request.method:
        return False
    if not all(_value_matches(h, request.headers.get(h["name"].lower())) for h in match.get("headers") or []):
        return False
    return all(_value_matches(q, request.query.get(q["name"])) for q in match.get("queryParams") or [])


def host_rank(route: dict, host: str) -> tuple[int, int] | None:
    """How specifically the route's hostnames match the host: (-characters of a matching exact name,
    -characters of a matching wildcard), (0, 0) for a route without hostnames, None for no match.
    `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`."""
    names = (route.get("spec") or {}).get("hostnames") or []
    if not names:
        return (0, 0)
    host = host.lower()
    exact = [len(n) for n in names if n.lower() == host]
    wild = [len(n) for n in names if n.startswith("*.") and host.endswith(n[1:].lower())]
    if exact:
        return (-max(exact), 0)
    return (0, -max(wild)) if wild else None


def _rank(host: tuple[int, int], route: dict, rule_index: int, match_index: int, match: dict) -> tuple:
    """Sort key, best first: most specific hostname > Exact path > longest prefix > method > most
    headers > most query params > oldest route > namespace/name alphabetical > first rule > first
    match (the spec's order)."""
    path = match.get("path") or DEFAULT_MATCH["path"]
    exact = path.get("type", "PathPrefix") == "Exact"
    length = len(path.get("value", "/")) if exact else len(_prefix(path.get("value", "/")))
    meta = route.get("metadata") or {}
    return (*host, not exact, -length, not match.get("method"), -len(match.get("headers") or []),
            -len(match.get("queryParams") or []), meta.get("creationTimestamp") or "",
            f"{meta.get('namespace')}/{meta.get('name')}", rule_index, match_index)


def select(routes: Sequence[dict], request: Request) -> Choice | None:
    """The rule that takes the request among every attached route, or None (the gateway answers 404)."""
    best = None
    for route in routes:
        host = host_rank(route, request.host)
        if host is None:
            continue
        for rule_index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
            for match_index, match in enumerate(rule.get("matches") or [DEFAULT_MATCH]):
                if matches(match, request):
                    key = _rank(host, route, rule_index, match_index, match)
                    if best is None or key < best[0]:
                        best = (key, Choice(route, rule_index, rule, match))
    return best[1] if best else None


def pick_backend(backend_refs: Sequence[dict], rng: random.Random) -> dict | None:
    """One backendRef, chosen in proportion to its weight (default 1); None when no ref has weight."""
    weights = [int(ref.get("weight", 1)) for ref in backend_refs]
    if sum(weights) <= 0:
        return None
    return rng.choices(list(backend_refs), weights=weights)[0]


def rewrite_path(path: str, match: dict, url_rewrite: dict) -> str:
    """URLRewrite's path: ReplaceFullPath, or ReplacePrefixMatch of the PathPrefix that matched
    (`/foo/bar` with prefix `/foo` and replacement `/xyz` -> `/xyz/bar`; replacement `/` -> `/bar`)."""
    spec = url_rewrite.get("path") or {}
    if spec.get("type") == "ReplaceFullPath":
        return spec["replaceFullPath"]
    if spec.get("type") == "ReplacePrefixMatch":
        prefix = _prefix((match.get("path") or DEFAULT_MATCH["path"]).get("value", "/"))
        rest = path[len(prefix):]
        return (_prefix(spec["replacePrefixMatch"]) + rest) or "/"
    return path


def modify_headers(headers: dict[str, str], modifier: dict) -> dict[str, str]:
    """RequestHeaderModifier: set replaces, add appends (comma-joined), remove drops; names case-insensitive."""
    out = {k.lower(): v for k, v in headers.items()}
    for h in modifier.get("set") or []:
        out[h["name"].lower()] = h["value"]
    for h in modifier.get("add") or []:
        name = h["name"].lower()
        out[name] = f"{out[name]},{h['value']}" if name in out else h["value"]
    for name in modifier.get("remove") or []:
        out.pop(name.lower(), None)
    return out


def apply_filters(filters: Sequence[dict], match: dict, path: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The request as the backend sees it after URLRewrite and RequestHeaderModifier filters."""
    for f in filters:
        if f.get("type") == "URLRewrite":
            path = rewrite_path(path, match, f.get("urlRewrite") or {})
            if (f.get("urlRewrite") or {}).get("hostname"):
                headers = {**headers, "host": f["urlRewrite"]["hostname"]}
        elif f.get("type") == "RequestHeaderModifier":
            headers = modify_headers(headers, f.get("requestHeaderModifier") or {})
    return path, headers
