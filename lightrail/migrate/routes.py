"""The front route: the one HTTPRoute whose weights move a model's traffic between two pools.

Clients keep their Gateway and their paths, so the front route copies the client-facing rules
(matches, filters, timeouts) of the source's own route - the llm-d router chart's, or the one
KServe manages - and replaces every backend with the weighted pair of InferencePools. Lightrail
owns it, so neither `helm upgrade` nor KServe's reconciler reverts a weight. Header-gated probe
rules reach one side only: the target is verified and warmed before it takes client traffic.
"""
from __future__ import annotations

import copy

from lightrail.errors import LightrailError
from lightrail.ops.objects import meta
from lightrail.plan import ModelServer, Plan, front_route
from lightrail.router import MODEL_HEADER

PROBE_HEADER = "x-lightrail-migration"
POOL_GROUP = "inference.networking.k8s.io"


def pool_name(plan: Plan, server: ModelServer) -> str:
    """The InferencePool each stack makes for a model: llm-d's router chart, or KServe's scheduler."""
    return server.pool if plan.stack == "llmd" else f"{server.name}-inference-pool"


def own_route_name(plan: Plan, server: ModelServer) -> str:
    """The route a stack makes for a model when it is not served through a front route."""
    return server.name if plan.stack == "llmd" else f"{server.name}-kserve-route"


def client_rules(route: dict) -> list[dict]:
    """The source route's rules without their backends and probe rules: what clients match."""
    rules = []
    for rule in route.get("spec", {}).get("rules") or []:
        if is_probe(rule):
            continue
        rules.append({k: copy.deepcopy(v) for k, v in rule.items() if k not in ("backendRefs", "name")})
    return rules


def backends(weights: dict[str, int]) -> list[dict]:
    """backendRefs for pools by weight; a pool at 0 is left out, never parked (Envoy re-creates its cluster)."""
    return [{"group": POOL_GROUP, "kind": "InferencePool", "name": pool, "weight": w}
            for pool, w in weights.items() if w > 0]


def front_route_object(plan: Plan, server: ModelServer, parent_refs: list[dict], rules: list[dict],
                       weights: dict[str, int], probes: dict[str, str], labels: dict[str, str]) -> dict:
    """The front route: every client rule to the weighted pools, then one probe rule per side.

    `probes` maps a probe header value ("source", "target") to the pool it reaches. A probe rule
    matches `/` plus the header and calls the OpenAI paths as the pool serves them (`/v1/...`):
    no client rule matches those with the probe header alone, and one rule per side keeps the
    route within the API's 16 rules (KServe's managed route has 13). Behind body-based routing
    (multimodel) a probe rule also matches the model's header, as the client rules do: every
    model's front route has its own probe rules on the one Gateway, and with one header more they
    take precedence over the client rules. Elsewhere no router fills that header, so KServe's own
    header rule is not copied into the probes. Probe rules come first all the same.
    """
    model = model_header(rules) if plan.body_based_routing else []
    out_rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                               "headers": [*model, {"type": "Exact", "name": PROBE_HEADER, "value": side}]}],
                  "backendRefs": backends({pool: 1})} for side, pool in probes.items()]
    out_rules += [{**copy.deepcopy(rule), "backendRefs": backends(weights)} for rule in rules]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": front_route(server), "namespace": plan.namespace, "labels": dict(labels)},
        "spec": {"parentRefs": copy.deepcopy(parent_refs), "rules": out_rules},
    }


def model_header(rules: list[dict]) -> list[dict]:
    """The model header match of body-routed client rules (X-Gateway-Model-Name: the model), or none."""
    found = {(h.get("type", "Exact"), h["name"], h["value"]) for r in rules for m in r.get("matches") or []
             for h in m.get("headers") or [] if h.get("name", "").lower() == MODEL_HEADER.lower()}
    if len(found) > 1:
        raise LightrailError(f"the source's route matches {len(found)} model names; a model's route matches one")
    return [{"type": t, "name": n, "value": v} for t, n, v in found]


def client_prefix(rules: list[dict]) -> str:
    """Where clients call a model's OpenAI paths: the path before `/v1/...` of a rule that rewrites
    it to `/v1/...` (KServe's `/<namespace>/<name>/v1/completions`), else the root."""
    for rule in rules:
        for f in rule.get("filters") or []:
            to = ((f.get("urlRewrite") or {}).get("path") or {}).get("replacePrefixMatch") or ""
            for match in rule.get("matches") or []:
                path = (match.get("path") or {}).get("value") or ""
                if to.startswith("/v1/") and path.endswith(to) and len(path) > len(to):
                    return path[:-len(to)]
    return ""


def is_probe(rule: dict) -> bool:
    return any(h.get("name") == PROBE_HEADER for m in rule.get("matches") or [] for h in m.get("headers") or [])


def client_weights(route: dict) -> dict[str, int]:
    """Pool -> weight of the front route's client rules (the first one: they all carry the same pair)."""
    rule = next((r for r in route.get("spec", {}).get("rules") or [] if not is_probe(r)), {})
    return {b["name"]: b.get("weight", 1) for b in rule.get("backendRefs") or []}


def parent_gateway(route: dict) -> tuple[str, str]:
    """(namespace, name) of the Gateway a route attaches to (its first Gateway parent)."""
    for parent in route.get("spec", {}).get("parentRefs") or []:
        if parent.get("kind", "Gateway") == "Gateway":
            return parent.get("namespace") or meta(route).get("namespace", ""), parent["name"]
    raise LightrailError(f"route {meta(route).get('name')} has no Gateway parent")
