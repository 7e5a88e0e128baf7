"""The Gateway API rules the gateway model routes by (lightrail/testing/routing.py), case by case as
the spec states them; tests/e2e/test_gateway_model.py shows them on the wire."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from lightrail.testing import routing


def route(name, rules, *, namespace="ns", created="2026-01-01T00:00:00Z", parent=None):
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"parentRefs": [parent or {"name": "gw"}], "rules": rules}}


def rule(backend, *matches, filters=None):
    return {"matches": list(matches), "backendRefs": [{"name": backend}], **({"filters": filters} if filters else {})}


def prefix(value, **more):
    return {"path": {"type": "PathPrefix", "value": value}, **more}


def req(path, method="POST", headers=None, query=None):
    return routing.Request(method, path, {k.lower(): v for k, v in (headers or {}).items()}, query or {})


def winner(routes, request):
    choice = routing.select(routes, request)
    return choice and choice.rule["backendRefs"][0]["name"]


@pytest.mark.parametrize("value, path, hit", [
    ("/abc", "/abc", True), ("/abc", "/abc/", True), ("/abc", "/abc/def", True), ("/abc", "/abcd", False),
    ("/abc/", "/abc", True), ("/abc/", "/abc/def", True), ("/abc/", "/abcd", False), ("/", "/anything", True),
])
def test_a_path_prefix_matches_whole_path_elements(value, path, hit):
    assert routing.path_matches({"type": "PathPrefix", "value": value}, path) is hit


def test_attachment_by_parent_ref_namespace_defaults_to_the_routes():
    assert routing.attached(route("r", []), "ns", "gw")
    assert not routing.attached(route("r", []), "other", "gw")
    assert routing.attached(route("r", [], parent={"name": "gw", "namespace": "other"}), "other", "gw")
    assert not routing.attached(route("r", [], parent={"name": "gw", "kind": "Service"}), "ns", "gw")


def test_precedence_exact_then_longest_prefix_then_method_then_headers_then_query():
    routes = [route("r", [
        rule("prefix-root", prefix("/")),
        rule("prefix-v1", prefix("/v1")),
        rule("method", prefix("/v1", method="POST")),
        rule("header", prefix("/v1", headers=[{"name": "x-a", "value": "1"}])),
        rule("two-headers", prefix("/v1", headers=[{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}])),
        rule("query", prefix("/v1", queryParams=[{"name": "q", "value": "1"}])),
        rule("exact", {"path": {"type": "Exact", "value": "/v1/models"}}),
    ])]
    assert winner(routes, req("/v1/models", headers={"x-a": "1", "x-b": "2"})) == "exact"
    assert winner(routes, req("/v1/chat", method="POST", headers={"X-A": "1", "x-b": "2"})) == "method"
    assert winner(routes, req("/v1/chat", method="GET", headers={"x-a": "1", "x-b": "2"}, query={"q": "1"})) == "two-headers"
    assert winner(routes, req("/v1/chat", method="GET", headers={"x-a": "1"}, query={"q": "1"})) == "header"
    assert winner(routes, req("/v1/chat", method="GET", query={"q": "1"})) == "query"
    assert winner(routes, req("/v1/chat", method="GET")) == "prefix-v1"
    assert winner(routes, req("/v2", method="GET")) == "prefix-root"


def test_identical_matches_go_to_the_oldest_route_then_alphabetical_then_first_rule():
    same = prefix("/")
    older = route("z-older", [rule("older", same)], created="2026-01-01T00:00:00Z")
    newer = route("a-newer", [rule("newer", same)], created="2026-01-01T00:00:01Z")
    assert winner([newer, older], req("/x")) == "older"
    tie_b = route("b", [rule("b", same)], namespace="ns")
    tie_a = route("a", [rule("a-first", same), rule("a-second", same)], namespace="ns")
    assert winner([tie_b, tie_a], req("/x")) == "a-first"


def test_no_match_is_none_and_a_rule_without_matches_takes_everything():
    assert routing.select([route("r", [rule("v1", prefix("/v1"))])], req("/v2")) is None
    assert winner([route("r", [{"backendRefs": [{"name": "all"}]}])], req("/any/thing")) == "all"


def test_weights_are_proportional_and_weight_zero_is_never_chosen():
    refs = [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}, {"name": "c", "weight": 0}]
    rng = random.Random(1)
    counts = Counter(routing.pick_backend(refs, rng)["name"] for _ in range(4000))
    assert counts["c"] == 0 and 0.72 < counts["a"] / 4000 < 0.78
    assert routing.pick_backend([{"name": "a", "weight": 0}], rng) is None
    assert routing.pick_backend([{"name": "a"}], rng)["name"] == "a"


@pytest.mark.parametrize("path, matched, replacement, out", [   # the spec's ReplacePrefixMatch table
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"), ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"), ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"), ("/foo/", "/foo", "/xyz", "/xyz/"), ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"), ("/foo", "/foo", "", "/"), ("/foo/", "/foo", "/", "/"), ("/foo", "/foo", "/", "/"),
    ("/ns/svc/v1/models", "/ns/svc", "/", "/v1/models"),
])
def test_replace_prefix_match_follows_the_spec_table(path, matched, replacement, out):
    rewrite = {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": replacement}}
    assert routing.rewrite_path(path, prefix(matched), rewrite) == out


def test_filters_rewrite_the_full_path_and_modify_headers_in_order():
    filters = [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/v1/models"}}},
               {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                   "set": [{"name": "X-Set", "value": "new"}], "add": [{"name": "x-add", "value": "b"}],
                   "remove": ["X-Gone"]}}]
    path, headers = routing.apply_filters(filters, prefix("/"), "/anything", {"x-set": "old", "x-add": "a", "x-gone": "1"})
    assert path == "/v1/models"
    assert headers == {"x-set": "new", "x-add": "a,b"}


def test_a_header_gated_probe_on_a_shorter_prefix_loses_to_the_client_rule():
    """The migrator's pitfall: headers count only between matches of equal path; a probe rule must
    repeat the client rule's path to take the probe requests."""
    probe_header = [{"name": "x-lightrail-migration", "value": "target"}]
    client = rule("source", prefix("/v1"))
    short_probe = route("front", [client, rule("target", prefix("/", headers=probe_header))])
    same_path_probe = route("front", [client, rule("target", prefix("/v1", headers=probe_header))])
    probe = req("/v1/completions", headers={"x-lightrail-migration": "target"})
    assert winner([short_probe], probe) == "source"
    assert winner([same_path_probe], probe) == "target"
    assert winner([same_path_probe], req("/v1/completions")) == "source"


def test_hostnames_filter_routes_and_the_most_specific_name_wins_first():
    anywhere = route("anywhere", [rule("anywhere", {"path": {"type": "Exact", "value": "/v1/models"}})])
    wildcard = route("wildcard", [rule("wildcard", prefix("/"))])
    wildcard["spec"]["hostnames"] = ["*.example.com"]
    named = route("named", [rule("named", prefix("/"))])
    named["spec"]["hostnames"] = ["api.example.com", "other.test"]

    def to(host, path="/v1/models"):
        return winner([anywhere, wildcard, named], routing.Request("GET", path, {}, {}, host))

    assert to("api.example.com") == "named"              # a hostname outranks an Exact path
    assert to("API.example.com") == "named"
    assert to("a.b.example.com") == "wildcard"
    assert to("example.com") == "anywhere" and to("127.0.0.1") == "anywhere"
    assert to("127.0.0.1", "/v1/other") is None          # only hostname-bound rules take other paths


def test_a_probe_header_ties_with_a_model_header_and_the_first_rule_wins():
    """llm-d's router chart matches `/` plus X-Gateway-Base-Model-Name (multimodel, set by BBR): a
    probe rule of `/` plus one probe header ties on header count, so rule order decides and a
    probe listed after the client rule joins the weighted split. Repeating the client's header in
    the probe's match makes it win."""
    model_header = {"name": "X-Gateway-Base-Model-Name", "value": "qwen"}
    probe_header = {"name": "x-lightrail-migration", "value": "target"}
    client = rule("weighted", prefix("/", headers=[model_header]))
    probe = rule("target", prefix("/", headers=[probe_header]))
    both = rule("target", prefix("/", headers=[model_header, probe_header]))
    request = req("/v1/completions", headers={"x-gateway-base-model-name": "qwen", "x-lightrail-migration": "target"})
    assert winner([route("front", [client, probe])], request) == "weighted"
    assert winner([route("front", [probe, client])], request) == "target"
    assert winner([route("front", [client, both])], request) == "target"
