"""The front route as the API server and a conformant gateway see it, and what is read from live routes.

The migration's phases (weights per step, the probe rules' order) are in test_migrate_plan.py;
here: the route validates against the real HTTPRoute schema, a gateway (lightrail.testing.routing,
the Gateway API's rules) sends each request where the migration means it to go, and the reads of a
source's live route (its client rules, weights and Gateway) give what the migration acts on.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lightrail.errors import LightrailError
from lightrail.migrate.routes import (PROBE_HEADER, client_rules, client_weights, front_route_object, own_route_name,
                                      parent_gateway)
from lightrail.plan import Request, build_plan
from lightrail.testing import routing
from lightrail.validate import validate_objects

FIXTURES = Path(__file__).parent / "fixtures"
# KServe's managed route for one model (design: `<name>-kserve-route`, paths `/<ns>/<name>/v1/...`
# rewritten to `/v1/...`, timeouts 0s): the client rules the front route must keep.
KSERVE_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "baseline-qwen2-5-3b-instruct-kserve-route", "namespace": "shop"},
    "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kserve-ingress-gateway",
                             "namespace": "kserve"}],
             "rules": [{"name": "v1-completions-path",
                        "matches": [{"path": {"type": "PathPrefix", "value": "/shop/baseline-qwen2-5-3b-instruct/v1/completions"}}],
                        "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1/completions"}}}],
                        "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                         "name": "baseline-qwen2-5-3b-instruct-inference-pool", "weight": 1}],
                        "timeouts": {"backendRequest": "0s", "request": "0s"}}]}}
SOURCE_POOL, TARGET_POOL = "baseline-qwen2-5-3b-instruct-inference-pool", "baseline-qwen2-5-3b-instruct"


def kserve_source():
    plan = build_plan(Request(pattern="baseline", accel="sim", stack="kserve", namespace="shop"))
    return plan, plan.servers[0]


def front(weights, probes=("source", "target"), route=KSERVE_ROUTE):
    plan, server = kserve_source()
    pools = {"source": SOURCE_POOL, "target": TARGET_POOL}
    return front_route_object(plan, server, route["spec"]["parentRefs"], client_rules(route), weights,
                              {side: pools[side] for side in probes}, {"lightrail.dev/stack": "kserve"})


def recorded_llmd_route():
    """An llm-d router chart's route as the API server returned it (no weight, parentRef without namespace)."""
    return next(o for o in yaml.safe_load_all((FIXTURES / "ops" / "routing.yaml").read_text())
                if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == "baseline-qwen2-5-3b-instruct")


def request(path, side=None):
    return routing.Request("POST", path, {PROBE_HEADER: side} if side else {})


def test_the_front_route_is_a_valid_httproute_in_the_sources_namespace():
    """What the API server would take: the real Gateway API schema (path and header match types,
    apiVersion, kind) - at every step, with both probe rules and with the target's alone."""
    for route in (front({SOURCE_POOL: 100, TARGET_POOL: 0}), front({SOURCE_POOL: 75, TARGET_POOL: 25}),
                  front({TARGET_POOL: 100}, ("target",))):
        assert validate_objects([route]) == []
        assert (route["kind"], route["metadata"]["namespace"]) == ("HTTPRoute", "shop")


def test_a_gateway_sends_probes_to_their_side_and_clients_to_the_weighted_pair():
    route = front({SOURCE_POOL: 75, TARGET_POOL: 25})
    for side, pool in (("source", SOURCE_POOL), ("target", TARGET_POOL)):
        chosen = routing.select([route], request("/v1/chat/completions", side))
        assert [b["name"] for b in chosen.rule["backendRefs"]] == [pool], side
    client = routing.select([route], request("/shop/baseline-qwen2-5-3b-instruct/v1/completions"))
    assert {b["name"]: b["weight"] for b in client.rule["backendRefs"]} == {SOURCE_POOL: 75, TARGET_POOL: 25}
    assert routing.apply_filters(client.rule.get("filters") or [], client.match,
                                 "/shop/baseline-qwen2-5-3b-instruct/v1/completions", {})[0] == "/v1/completions"
    assert routing.select([route], request("/v1/completions")) is None, "a path clients never used stays unrouted"
    assert client_weights(route) == {SOURCE_POOL: 75, TARGET_POOL: 25}


def test_the_client_rules_are_the_source_routes_without_backends_names_or_probe_rules():
    """Read before anything changes and kept in the migration's state: what clients match, nothing more."""
    rule = KSERVE_ROUTE["spec"]["rules"][0]
    expected = [{k: rule[k] for k in ("matches", "filters", "timeouts")}]
    assert client_rules(KSERVE_ROUTE) == expected
    # a migration back reads the front route, whose probe rules come first
    assert client_rules(front({SOURCE_POOL: 0, TARGET_POOL: 100})) == expected


def test_a_weight_left_out_is_one_as_the_gateway_api_defines_it():
    """The recorded llm-d route names its pool without a weight; a route of probe rules alone has no client weights."""
    assert client_weights(recorded_llmd_route()) == {"baseline-qwen2-5-3b-instruct": 1}
    assert client_weights({"spec": {"rules": front({TARGET_POOL: 100}, ("target",))["spec"]["rules"][:1]}}) == {}


def test_front_routes_share_nothing_with_the_rules_they_were_built_from():
    """Each built route is its own object: a change to one (as a later step's, or a client setting
    defaults) must not reach another route or the rules kept in the migration's state."""
    route = copy.deepcopy(KSERVE_ROUTE)
    rules = client_rules(route)
    route["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/changed"
    assert rules[0]["matches"][0]["path"]["value"] == "/shop/baseline-qwen2-5-3b-instruct/v1/completions"
    plan, server = kserve_source()
    parents = copy.deepcopy(KSERVE_ROUTE["spec"]["parentRefs"])
    one, two = (front_route_object(plan, server, parents, rules, {SOURCE_POOL: 100}, {}, {}) for _ in range(2))
    one["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/edited"
    one["spec"]["parentRefs"][0]["name"] = "edited"
    for untouched in (two["spec"]["rules"][0], rules[0]):
        assert untouched["matches"][0]["path"]["value"] == "/shop/baseline-qwen2-5-3b-instruct/v1/completions"
    assert (two["spec"]["parentRefs"][0]["name"], parents[0]["name"]) == ("kserve-ingress-gateway",) * 2


def test_the_gateway_a_route_attaches_to():
    """Its first Gateway parent; a parentRef without a namespace means the route's own."""
    assert parent_gateway(KSERVE_ROUTE) == ("kserve", "kserve-ingress-gateway")
    assert parent_gateway(recorded_llmd_route()) == ("lightrail", "baseline-gateway")
    mesh_first = copy.deepcopy(KSERVE_ROUTE)
    mesh_first["spec"]["parentRefs"].insert(0, {"group": "", "kind": "Service", "name": "mesh", "namespace": "shop"})
    assert parent_gateway(mesh_first) == ("kserve", "kserve-ingress-gateway")


def test_a_route_without_a_gateway_parent_is_an_error_not_a_traceback():
    mesh_only = copy.deepcopy(KSERVE_ROUTE)
    mesh_only["spec"]["parentRefs"] = [{"group": "", "kind": "Service", "name": "mesh"}]
    with pytest.raises(LightrailError, match="^route baseline-qwen2-5-3b-instruct-kserve-route has no Gateway parent$"):
        parent_gateway(mesh_only)


def test_the_route_a_stack_makes_for_a_model_is_the_one_read_as_the_source():
    """llmd: the router chart's route (rendered with the real charts); kserve: KServe's managed `<name>-kserve-route`."""
    from lightrail.render import render_validated
    from lightrail.settings import charts_dir

    plan, server = kserve_source()
    assert own_route_name(plan, server) == KSERVE_ROUTE["metadata"]["name"]
    llmd = build_plan(Request(pattern="caching", accel="sim", stack="llmd", namespace="shop"))
    routes = [o["metadata"]["name"] for o in render_validated(llmd, charts=charts_dir()).objects if o["kind"] == "HTTPRoute"]
    assert routes == [own_route_name(llmd, llmd.servers[0])]
