"""The migration plan, pure: phases, front routes, weights, and the algebra of resume and rollback.

Each operation's effect is modelled on a small world (which routes exist and where they send
clients, which side is deployed how, who owns the Gateway). After every operation the world must
serve clients from a deployed pool; from every phase, crash + resume ends where an uninterrupted
run ends, and rollback ends exactly where the source started. The real cluster runs the same
plans in tests/e2e/test_migrate.py.
"""
from __future__ import annotations

import copy
import json

import pytest

from lightrail.errors import LightrailError
from lightrail.migrate.plan import DEFAULT_STEPS, WARM_LIMIT, Options, describe, plan_migration, warm_prompts
from lightrail.migrate.routes import PROBE_HEADER, client_rules, client_weights, pool_name
from lightrail.ops.objects import MIGRATION_LABEL
from lightrail.migrate.state import State, from_config_map
from lightrail.plan import KSERVE_GATEWAY, Request, build_plan
from lightrail.router import MODEL_HEADER

GATEWAY = ("shop", "caching-gateway")
LLMD_ROUTE = {"spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "caching-gateway"}],
                       "rules": [{"backendRefs": [{"name": "x", "kind": "InferencePool"}], "name": "r",
                                  "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                  "timeouts": {"request": "300s"}}]}}
KSERVE_ROUTE = {"spec": {"parentRefs": [{"kind": "Gateway", "name": "kserve-ingress-gateway", "namespace": "kserve"}],
                         "rules": [{"backendRefs": [{"name": "p", "kind": "InferencePool", "weight": 1}],
                                    "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                                        "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1/completions"}}}],
                                    "matches": [{"path": {"type": "PathPrefix", "value": "/shop/m/v1/completions"}}],
                                    "name": "v1-completions-path"}]}}


def body_routed(route, model):
    """A model's route behind body-based routing (llm-d's router chart): `/` and the model's header."""
    route = copy.deepcopy(route)
    for rule in route["spec"]["rules"]:
        rule["matches"] = [{"headers": [{"name": MODEL_HEADER, "type": "Exact", "value": model}],
                            "path": {"type": "PathPrefix", "value": "/"}}]
    return route


def migration(pattern="caching", accel="sim", source="llmd", to="kserve", route=LLMD_ROUTE, replicas=None,
              fronted=False, gateway=GATEWAY, **options):
    """`fronted`: a migration back - the source runs behind the front route a migration left it, whose
    client rules are still those of `route` (the first source's own route); multimodel's match each
    model's header."""
    front = f"{gateway[0]}/{gateway[1]}" if fronted else ""
    plan = build_plan(Request(pattern=pattern, accel=accel, stack=source, namespace="shop", replicas=replicas,
                              front=front))
    routes = {s.name: body_routed(route, plan.client_model(s)) if plan.body_based_routing else route
              for s in plan.servers}
    return plan_migration(plan, to, gateway, {name: client_rules(r) for name, r in routes.items()},
                          {s.name: route["spec"]["parentRefs"] for s in plan.servers}, Options(**options),
                          source_fronted=fronted)


# --- a model of what each operation does -------------------------------------------------------


def initial(m):
    """The source as it runs: behind its own route, or (a migration back) behind the front route the last
    migration handed over to it, with the Gateway that came with it."""
    r = m.source.servers[0].replicas
    src = pool_name(m.source, m.source.servers[0])
    front = {"weights": {src: 100}, "probes": {"source": src}, "stack": m.source.stack, "migrating": False,
             "name": f"{m.source.servers[0].name}-front"}
    return {"source": {"route": "front" if m.source_fronted else "own", "pods": r, "retired": 0},
            "target": {"pods": 0, "retired": 0}, "front": front if m.source_fronted else None,
            "gateway_stack": m.source.stack}


def capacity(m):
    """Room for model-server pods: both sides at once (surge), or only the source's (--no-surge)."""
    r = m.source.servers[0].replicas
    return 2 * r if m.options.surge else r


def front_of(route):
    rules = route["spec"]["rules"]
    client = [r for r in rules if not any(h["name"] == PROBE_HEADER for mt in r["matches"] for h in mt.get("headers", []))]
    probes = {h["value"]: r["backendRefs"][0]["name"] for r in rules for mt in r["matches"]
              for h in mt.get("headers", []) if h["name"] == PROBE_HEADER}
    weights = {b["name"]: b["weight"] for b in client[0]["backendRefs"]}
    assert sum(weights.values()) == 100, f"weights are the target's and the source's percent: {weights}"
    return {"weights": weights, "probes": probes, "stack": route["metadata"]["labels"]["lightrail.dev/stack"],
            "migrating": MIGRATION_LABEL in route["metadata"]["labels"], "name": route["metadata"]["name"]}


def effect(m, world, op):
    w = copy.deepcopy(world)
    side = w.get(op.side)
    o = m.options
    waits = {"settle": o.settle, "drain": o.drain, "release": o.drain, "hold": o.hold}
    assert op.seconds == waits.get(op.action, 0.0), f"{op.title!r} waits {op.seconds} s"
    if op.action == "apply":
        w["front"] = front_of(op.objects[0])
        assert len(op.objects) == len(m.source.servers), f"{op.title!r}: a front route per model"
        for obj, src, tgt in zip(op.objects[1:], m.source.servers[1:], m.target.servers[1:]):   # the same shares
            pools = {pool_name(m.source, m.source.servers[0]): pool_name(m.source, src),
                     pool_name(m.target, m.target.servers[0]): pool_name(m.target, tgt)}
            first = w["front"]
            assert front_of(obj)["weights"] == {pools[p]: v for p, v in first["weights"].items()}, op.title
            assert front_of(obj)["probes"] == {k: pools[p] for k, p in first["probes"].items()}, op.title
    elif op.action == "delete":
        if w["front"] and w["front"]["name"] in {o["metadata"]["name"] for o in op.objects}:
            w["front"] = None
    elif op.action == "deploy":
        if op.side == "source" and m.source.stack == "kserve" and (op.front or side["route"] == "front"):
            # KServe waits until the routes it is given are Ready: one naming a pool not there yet never is
            tgt = pool_name(m.target, m.target.servers[0])
            named = set(w["front"]["weights"]) | set(w["front"]["probes"].values())
            assert tgt not in named or w["target"]["pods"], f"{op.title!r}: the front route names the target's " \
                "pool, which does not exist yet, so the kserve source never becomes Ready"
        want = op.replicas or m.side(op.side).servers[0].replicas
        assert side["pods"] <= want, (f"{op.title!r} deletes a pod still in the {op.side}'s pool (its requests "
                                      "in flight break): retire it first")
        side["pods"] = want
        if op.side == "source":
            side["route"] = "front" if op.front else "own"
    elif op.action == "remove":
        w[op.side] = {"route": None, "pods": 0, "retired": 0} if op.side == "source" else {"pods": 0, "retired": 0}
    elif op.action == "retire":
        side["retired"] += max(0, side["pods"] - op.replicas)
        side["pods"] = min(side["pods"], op.replicas)
    elif op.action == "release":
        side["retired"] = 0
    elif op.action == "relabel":
        stack = op.labels["lightrail.dev/stack"]
        if w["front"] and w["front"]["name"] in {o["metadata"]["name"] for o in op.objects}:
            w["front"]["stack"] = stack
            w["front"]["migrating"] = op.labels[MIGRATION_LABEL] is not None
        if op.releases:
            w["gateway_stack"] = stack
    elif op.action == "verify" and op.side == "clients":   # through the client rules: the target alone serves
        assert w["front"] and set(w["front"]["weights"]) == {pool_name(m.target, m.target.servers[0])}, op.title
        assert w["target"]["pods"] and w["source"]["route"] is None, op.title
    elif op.action in ("verify", "warm", "hold"):   # they send requests: the side must be reachable
        name = "target" if op.action == "hold" else op.side
        assert w["front"] and name in w["front"]["probes"], f"{op.title}: no probe rule for the {name}"
        assert w[name]["pods"], f"{op.title}: the {name} is not deployed"
        if op.action == "hold":
            assert op.replicas in (0, w["target"]["pods"]), f"{op.title}: guards {op.replicas} target replicas, " \
                                                            f"{w['target']['pods']} run"
            tgt = pool_name(m.target, m.target.servers[0])
            served = 0 if w["source"]["route"] == "own" else w["front"]["weights"].get(tgt, 0)
            assert op.weight == served, f"{op.title}: guards {op.weight}%, clients reach the target at {served}%"
    else:
        assert op.action in ("settle", "drain"), f"{op.title!r}: unknown action {op.action!r}"
    used = sum(w[s]["pods"] + w[s]["retired"] for s in ("source", "target"))
    assert used <= capacity(m), f"after {op.title!r}: {used} pods need room, the cluster has {capacity(m)}"
    check_served(m, w, op)
    return w


def check_served(m, w, op):
    """Clients always reach a pool with pods: the source's own route (oldest wins), or the front route."""
    src, tgt = pool_name(m.source, m.source.servers[0]), pool_name(m.target, m.target.servers[0])
    if w["source"]["route"] == "own":
        assert w["source"]["pods"], f"after {op.title!r}: the source's own route has no pod to serve"
        return
    assert w["front"], f"after {op.title!r}: no route serves clients"
    pods = {src: w["source"]["pods"], tgt: w["target"]["pods"]}
    for pool, weight in w["front"]["weights"].items():
        assert weight > 0, "a backend parked at weight 0"
        assert pods[pool], f"after {op.title!r}: clients are sent to {pool}, which is not deployed"


def run(m, world, phases, direction="forward"):
    for phase in phases:
        for op in (phase.forward if direction == "forward" else phase.backward):
            world = effect(m, world, op)
    return world


CASES = [("caching", "sim", "llmd", "kserve", LLMD_ROUTE, True), ("baseline", "gpu", "llmd", "kserve", LLMD_ROUTE, True),
         ("caching", "tpu", "kserve", "llmd", KSERVE_ROUTE, True), ("moe", "gpu", "llmd", "kserve", LLMD_ROUTE, True),
         ("baseline", "sim", "kserve", "llmd", KSERVE_ROUTE, True),
         # --no-surge: room for the source's pods only
         ("caching", "sim", "llmd", "kserve", LLMD_ROUTE, False), ("caching", "tpu", "kserve", "llmd", KSERVE_ROUTE, False),
         ("moe", "gpu", "llmd", "kserve", LLMD_ROUTE, False), ("moe", "gpu", "kserve", "llmd", KSERVE_ROUTE, False)]
CASES = [(*c, False) for c in CASES] + [
    # migrations back: the source (kserve) runs behind the front route the first migration (from llmd) left
    ("caching", "sim", "kserve", "llmd", LLMD_ROUTE, True, True), ("baseline", "gpu", "kserve", "llmd", LLMD_ROUTE, True, True),
    ("caching", "sim", "kserve", "llmd", LLMD_ROUTE, False, True), ("moe", "gpu", "llmd", "kserve", KSERVE_ROUTE, False, True),
    # multimodel, from llmd (whose Gateway and body-based router stay) and back
    ("multimodel", "sim", "llmd", "kserve", LLMD_ROUTE, True, False), ("multimodel", "gpu", "llmd", "kserve", LLMD_ROUTE, False, False),
    ("multimodel", "sim", "kserve", "llmd", LLMD_ROUTE, True, True), ("multimodel", "tpu", "kserve", "llmd", LLMD_ROUTE, False, True),
    # multimodel, from KServe's shared gateway (whose router, a kustomize unit, stays) and back
    ("multimodel", "sim", "kserve", "llmd", KSERVE_ROUTE, True, False), ("multimodel", "gpu", "kserve", "llmd", KSERVE_ROUTE, False, False),
    ("multimodel", "sim", "llmd", "kserve", KSERVE_ROUTE, True, True), ("multimodel", "tpu", "llmd", "kserve", KSERVE_ROUTE, False, True)]
PARAMS = "pattern,accel,source,to,route,surge,fronted"


def case(pattern, accel, source, to, route, surge, fronted):
    """moe runs one LWS group unless told; --no-surge needs two to swap. multimodel keeps KServe's shared
    gateway when it started there."""
    gateway = KSERVE_GATEWAY if pattern == "multimodel" and route is KSERVE_ROUTE else GATEWAY
    return migration(pattern, accel, source, to, route, replicas=None if surge or pattern in ("caching",) else 2,
                     fronted=fronted, gateway=gateway, surge=surge)


@pytest.mark.parametrize(PARAMS, CASES)
def test_an_uninterrupted_run_always_serves_clients_and_ends_on_the_target(pattern, accel, source, to, route, surge,
                                                                           fronted):
    m = case(pattern, accel, source, to, route, surge, fronted)
    end = run(m, initial(m), m.phases)
    tgt = pool_name(m.target, m.target.servers[0])
    assert end == {"source": {"route": None, "pods": 0, "retired": 0},
                   "target": {"pods": m.target.servers[0].replicas, "retired": 0},
                   # the Gateway an llmd source made goes with the deployment (on a migration back: the source's),
                   # and so does the body-based router on the Gateway (KServe's shared one too)
                   "gateway_stack": to if source == "llmd" or fronted or pattern == "multimodel" else source,
                   "front": {"weights": {tgt: 100}, "probes": {"target": tgt}, "stack": to, "migrating": False,
                             "name": f"{m.source.servers[0].name}-front"}}


@pytest.mark.parametrize(PARAMS, CASES)
def test_crash_in_any_phase_then_resume_ends_where_an_uninterrupted_run_ends(pattern, accel, source, to, route, surge,
                                                                           fronted):
    m = case(pattern, accel, source, to, route, surge, fronted)
    end = run(m, initial(m), m.phases)
    for k, phase in enumerate(m.phases):
        for cut in range(len(phase.forward) + 1):   # the phase's operations that ran before the crash
            world = run(m, initial(m), m.phases[:k])
            for op in phase.forward[:cut]:
                world = effect(m, world, op)
            assert run(m, world, m.phases[k:]) == end, f"resume from {phase.name} after {cut} op(s)"


@pytest.mark.parametrize(PARAMS, CASES)
def test_rollback_from_any_point_restores_the_source_exactly(pattern, accel, source, to, route, surge, fronted):
    m = case(pattern, accel, source, to, route, surge, fronted)
    for k, phase in enumerate(m.phases):
        for cut in range(len(phase.forward) + 1):
            world = run(m, initial(m), m.phases[:k])
            for op in phase.forward[:cut]:
                world = effect(m, world, op)
            back = run(m, world, reversed(m.phases[:k + 1]), "backward")
            assert back == initial(m), f"rollback from {phase.name} after {cut} op(s): {back}"


def test_the_wrong_order_is_caught_by_the_model():
    """Removing the source before any weight moved leaves clients on a pool that is gone."""
    m = migration()
    world = run(m, initial(m), m.phases[:3])   # front, retire, deploy-target
    remove = next(p for p in m.phases if p.name == "remove-source").forward[0]
    with pytest.raises(AssertionError, match="not deployed"):
        effect(m, world, remove)


def test_weights_follow_the_steps_and_no_backend_is_parked_at_zero():
    m = migration(steps=(10, 50, 100))
    shifts = [p for p in m.phases if p.name.startswith("shift-")]
    assert [p.name for p in shifts] == ["shift-10", "shift-50", "shift-100"]
    src, tgt = "caching-qwen2-5-3b-instruct", "caching-qwen2-5-3b-instruct-inference-pool"
    seen = [client_weights(p.forward[0].objects[0]) for p in shifts]
    assert seen == [{src: 90, tgt: 10}, {src: 50, tgt: 50}, {tgt: 100}]
    back = [client_weights(p.backward[0].objects[0]) for p in shifts]
    assert back == [{src: 100}, {src: 90, tgt: 10}, {src: 50, tgt: 50}]
    assert [op.seconds for p in shifts for op in p.forward if op.action == "hold"] == [60.0, 60.0, 60.0]


def test_the_front_route_keeps_the_client_rules_and_probes_each_side():
    """KServe's managed route: its path match and URL rewrite stay; each backend becomes the weighted
    pair; probe rules (first: a tie on precedence goes to the first rule) match `/` plus the header."""
    m = migration("baseline", "sim", "kserve", "llmd", KSERVE_ROUTE)
    route = next(p for p in m.phases if p.name == "shift-25").forward[0].objects[0]
    assert route["metadata"]["name"] == "baseline-qwen2-5-3b-instruct-front"
    assert route["spec"]["parentRefs"] == KSERVE_ROUTE["spec"]["parentRefs"]
    *probes, client = route["spec"]["rules"]
    assert client["matches"] == KSERVE_ROUTE["spec"]["rules"][0]["matches"]
    assert client["filters"] == KSERVE_ROUTE["spec"]["rules"][0]["filters"]
    assert "name" not in client   # rule names are the source's; ours must not clash with a later copy
    assert client["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "baseline-qwen2-5-3b-instruct-inference-pool",
         "weight": 75},
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "baseline-qwen2-5-3b-instruct", "weight": 25}]
    assert [(p["matches"][0]["path"]["value"], p["matches"][0]["headers"][0]["value"], p["backendRefs"][0]["name"])
            for p in probes] == [("/", "source", "baseline-qwen2-5-3b-instruct-inference-pool"),
                                 ("/", "target", "baseline-qwen2-5-3b-instruct")]


def test_the_target_is_served_through_the_front_route_on_the_kept_gateway():
    m = migration()
    assert (m.target.stack, m.target.gateway.namespace, m.target.gateway.name) == ("kserve", *GATEWAY)
    assert m.target.request.front == "shop/caching-gateway"
    back = migration("caching", "sim", "kserve", "llmd", KSERVE_ROUTE)
    assert not any(u.source == "llm-d-infra" for u in back.target.units), "an llmd target makes no Gateway of its own"
    router = next(u for u in back.target.units if u.source == "llm-d-router-gateway")
    assert "HTTPRoute" not in router.objects and "InferencePool" in router.objects


def test_the_state_round_trips_through_its_config_map():
    m = migration(steps=(5, 100), hold=3)
    state = State.start(m)
    state.position, state.weight = 4, 5
    state.note("paused by a test")
    again = from_config_map(copy.deepcopy(state.config_map("shop")))
    assert again.config_map("shop") == state.config_map("shop") and again.migration() == m
    assert (again.position, again.weight, again.history[-1][3]) == (4, 5, "paused by a test")


def test_warm_prompts_travel_with_the_state_and_name_the_warm_up():
    m = migration(warm_prompts=("You are a terse assistant.\nRules:", "Translate to French:"))
    again = from_config_map(copy.deepcopy(State.start(m).config_map("shop"))).migration()
    assert again.options.warm_prompts == m.options.warm_prompts and again == m
    (warm,) = [op for phase in m.phases for op in phase.forward if op.action == "warm"]
    assert warm.title == "warm the target's prefix cache through its probe rule with the 2 prompt(s) of --warm-prompts"
    with pytest.raises(LightrailError, match="pattern baseline has no prefix-cache-aware picking"):
        migration(pattern="baseline", warm_prompts=("x",))


def test_a_warm_prompts_file_is_json_lines_of_prompts_and_every_bad_line_is_named():
    text = '{"prompt": "a\\nb"}\n\n  \n{"prompt": "c", "output_tokens": 4}\n'
    assert warm_prompts(text, "p.jsonl") == ("a\nb", "c")
    for bad, line in (('{"prompt": "a"}\n["b"]', 2), ('{"prompt": ""}', 1), ('{"text": "a"}', 1), ("{", 1),
                      ('{"prompt": 3}', 1), ('"just a string"', 1)):
        with pytest.raises(LightrailError, match=f'p.jsonl line {line}: expected a JSON object with a non-empty "prompt"'):
            warm_prompts(bad, "p.jsonl")
    with pytest.raises(LightrailError, match="p.jsonl holds no prompt"):
        warm_prompts("\n \n", "p.jsonl")
    big = "\n".join(['{"prompt": "%s"}' % ("x" * 1000)] * (WARM_LIMIT // 1000 + 1))
    with pytest.raises(LightrailError, match=f"more than {WARM_LIMIT}"):
        warm_prompts(big, "p.jsonl")
    # measured as the state stores them (JSON escapes non-ASCII): 50,000 CJK letters are 300,004 characters there
    with pytest.raises(LightrailError, match=f"300004 characters of prompts as stored, more than {WARM_LIMIT}"):
        warm_prompts(json.dumps({"prompt": "語" * 50_000}), "p.jsonl")
    assert warm_prompts(json.dumps({"prompt": "語" * 40_000}), "p.jsonl") == ("語" * 40_000,)


@pytest.mark.parametrize("data,why", [({}, "state.json"), ({"state.json": "{"}, "Expecting"),
                                      ({"state.json": '{"format": 9}'}, "unknown format"),
                                      ({"state.json": '{"format": 1, "nope": 1}'}, "unexpected keyword")])
def test_a_state_this_version_cannot_read_is_named_not_guessed(data, why):
    with pytest.raises(LightrailError, match=why):
        from_config_map({"metadata": {"name": "caching-migration"}, "data": data})


@pytest.mark.parametrize("kwargs,error", [
    ({"to": "llmd"}, "already runs on the llmd stack"),
    ({"steps": (50, 10, 100)}, "must rise strictly"),
    ({"steps": (10, 50)}, "to 100"),
    ({"steps": (0, 100)}, "from 1"),
    ({"hold": -1}, "--hold must not be negative"),
])
def test_impossible_migrations_are_refused(kwargs, error):
    with pytest.raises(LightrailError, match=error):
        migration(**kwargs)


def test_the_plan_says_every_phase_its_undo_and_the_guards():
    text = "\n".join(describe(migration()))
    assert "phase 1/14 front:" in text and "phase 14/14 handover:" in text
    assert "undo: remove the target (kserve)" in text
    assert "weights (target %): " + " -> ".join(map(str, DEFAULT_STEPS)) in text
    assert "guards during every hold" in text


@pytest.mark.parametrize("stack,front", [("llmd", "kserve/kserve-ingress-gateway"), ("kserve", "shop/caching-gateway")])
def test_a_fronted_deployment_renders_and_validates_without_a_gateway_or_route_of_its_own(stack, front):
    """What a migration deploys as its target: the real charts / kustomize, validated against the real schemas."""
    from lightrail.render import render_validated
    from lightrail.settings import charts_dir

    plan = build_plan(Request(pattern="caching", accel="sim", stack=stack, namespace="shop", front=front))
    objects = render_validated(plan, charts=charts_dir()).objects
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"Gateway", "HTTPRoute"}, kinds
    if stack == "kserve":
        (svc,) = [o for o in objects if o["kind"] == "LLMInferenceService"]
        assert svc["spec"]["router"]["gateway"] == {"refs": [{"name": "caching-gateway", "namespace": "shop"}]}
        assert svc["spec"]["router"]["route"] == {"http": {"refs": [{"name": "caching-qwen2-5-3b-instruct-front"}]}}
    else:
        assert "InferencePool" in kinds


@pytest.mark.parametrize("ref", ["nope", "a/b/c", "Bad_NS/gw", "ns/"])
def test_a_gateway_reference_must_be_namespace_slash_name(ref):
    with pytest.raises(LightrailError, match="NAMESPACE/NAME"):
        build_plan(Request(pattern="caching", accel="sim", front=ref))


def test_guards_trip_on_a_failed_probe_missing_endpoints_or_slow_answers_and_say_why():
    from lightrail.migrate.guards import Limits, Sample, verdict

    fast = [Sample(True, 0.10)] * 5
    assert verdict(fast, baseline=0.08, ready=3, desired=3) is None
    assert "1 of 6 target probe(s) failed, last: HTTP 503" in verdict([*fast, Sample(False, 0, "HTTP 503")], 0.08, 3, 3)
    assert verdict([*fast, Sample(False, 0, "x")], 0.08, 3, 3, Limits(failures=1)) is None
    assert verdict(fast, 0.08, 2, 3) == "only 2 of 3 target endpoint(s) ready"
    slow = [Sample(True, 1.5)] * 3     # limit: max(3 x 0.1, 0.1 + 1.0) = 1.1 s
    assert "latency median 1500 ms is above the limit 1100 ms (source baseline 100 ms)" in verdict(slow, 0.1, 3, 3)
    assert verdict(slow[:2], 0.1, 3, 3) is None, "two samples are not enough to judge latency"
    assert verdict([Sample(True, 2.9)] * 3, 1.0, 3, 3) is None, "3 x baseline is the limit when that is larger"
    assert verdict(slow, None, 3, 3) is None, "no baseline, no latency guard"


def test_no_surge_swaps_a_replica_per_step_and_the_weights_follow_the_replicas():
    m = migration(surge=False)      # caching: 3 replicas
    assert [p.name for p in m.phases] == ["front", "retire-source-route", "swap-1", "verify-target", "shift-33",
                                          "swap-2", "shift-67", "shift-100", "drain", "remove-source", "scale-target",
                                          "handover"]
    src, tgt = "caching-qwen2-5-3b-instruct", "caching-qwen2-5-3b-instruct-inference-pool"
    shifts = [p for p in m.phases if p.name.startswith("shift-")]
    assert [client_weights(p.forward[0].objects[0]) for p in shifts] == [{src: 67, tgt: 33}, {src: 33, tgt: 67},
                                                                         {tgt: 100}]
    assert [op.replicas for p in shifts for op in p.forward if op.action == "hold"] == [1, 2, 2]
    swap = next(p for p in m.phases if p.name == "swap-2")
    assert [(op.action, op.side, op.replicas) for op in swap.forward] == [
        ("retire", "source", 1), ("settle", "", 0), ("drain", "", 0), ("deploy", "source", 1), ("release", "source", 0),
        ("deploy", "target", 2), ("settle", "", 0)]
    assert "weights (target %): 33 -> 67 -> 100 (--no-surge: 3 replicas swapped one at a time)" in describe(m)[1]


def test_the_model_catches_a_scale_down_that_skips_retiring_the_pod():
    """Scaling the source down while its pod is still in the pool breaks that pod's requests in flight."""
    m = migration(surge=False)
    swap = next(p for p in m.phases if p.name == "swap-1")
    world = run(m, initial(m), m.phases[:m.index("swap-1")])
    scale = next(op for op in swap.forward if op.action == "deploy" and op.side == "source")
    with pytest.raises(AssertionError, match="retire it first"):
        effect(m, world, scale)


@pytest.mark.parametrize("pattern", ["baseline", "moe"])
def test_no_surge_with_one_replica_is_refused_before_the_cluster_is_read(pattern):
    with pytest.raises(LightrailError, match="nothing would serve") as err:
        migration(pattern, "gpu", surge=False)
    assert "--replicas=2" in err.value.fix


def pod(name, ready=True, phase="Running", group=None, deleting=False):
    meta = {"name": name, "labels": {} if group is None else {"leaderworkerset.sigs.k8s.io/group-index": str(group)}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_pods_leave_the_pool_surplus_first_not_ready_first_and_lws_groups_from_the_top():
    from lightrail.migrate.retire import to_retire

    names = lambda pods: [p["metadata"]["name"] for p in pods]   # noqa: E731
    pods = [pod("a"), pod("b", ready=False), pod("c"), pod("d", phase="Pending"), pod("e", deleting=True)]
    assert names(to_retire(pods, 2, False)) == ["b"]     # a, b, c run; the one not ready serves nothing anyway
    assert names(to_retire(pods, 1, False)) == ["b", "a"]
    assert names(to_retire(pods, 3, False)) == []          # a pending replacement or a dying pod is not a replica
    groups = [pod(f"g{i}-{j}", group=i) for i in range(3) for j in range(2)]
    assert names(to_retire(groups, 2, True)) == ["g2-0", "g2-1"]   # LWS scaled to 2 deletes group 2, whole


def test_removing_a_kserve_source_spares_the_https_gateway_it_made():
    """--tls-secret on kserve renders the deployment's own HTTPS Gateway; it is the Gateway clients use,
    so removing the source leaves it (and only it) of the source's objects."""
    from lightrail.migrate.run import spared
    from lightrail.render import render

    m = migration("caching", "sim", "kserve", "llmd", KSERVE_ROUTE)
    objects = render(build_plan(Request(pattern="caching", accel="sim", stack="kserve", namespace="shop",
                                        tls_secret="llm-cert"))).objects
    spare, _ = spared(m)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects if spare(o)] == [("Gateway", "caching-gateway")]
    assert "LLMInferenceService" in {o["kind"] for o in objects if not spare(o)}


def test_the_plan_in_words_no_surge_every_operation_and_its_undo():
    """What `invoke migrate --dry-run --no-surge` shows before anything changes: caching, 3 replicas swapped one
    at a time, the target's prefix cache warmed, the Gateway the llmd source made handed over."""
    assert describe(migration(surge=False)) == [
        'migrate caching (sim) from llmd to kserve in namespace shop, behind Gateway shop/caching-gateway (kept)',
        'weights (target %): 33 -> 67 -> 100 (--no-surge: 3 replicas swapped one at a time); hold 60 s each; '
        'settle 5 s after each route change; drain 30 s',
        'phase 1/12 front:',
        "  - own the front route(s): client rules and a probe rule to the source's pool",
        '  - let the gateway apply the route change (5 s)',
        '  undo: delete the front route(s)',
        '  undo: let the gateway apply the route change (5 s)',
        'phase 2/12 retire-source-route:',
        '  - serve the source (llmd) through the front route: its own route goes',
        '  - let the gateway apply the route change (5 s)',
        "  undo: restore the source's own route (llmd)",
        '  undo: let the gateway apply the route change (5 s)',
        'phase 3/12 swap-1:',
        "  - the front route(s) without the target's probe rule",
        "  - take the source's (llmd) pods beyond 2 replica(s) out of its pool",
        '  - let the gateway see the pool change (5 s)',
        "  - let the retired pods' requests in flight finish (30 s)",
        '  - scale the source (llmd) to 2 replica(s)',
        "  - delete the source's retired pods still there (drained 30 s)",
        "  - add the target's probe rule to the front route(s)",
        '  - deploy the target (kserve) with 1 replica(s) in the room the source left, attached to the front route',
        '  - let the gateway apply the route change (5 s)',
        '  undo: remove the target (kserve)',
        "  undo: the front route(s) without the target's probe rule",
        '  undo: delete the retired source pods once drained (30 s)',
        '  undo: scale the source (llmd) back to 3 replica(s)',
        'phase 4/12 verify-target:',
        '  - verify the target through its probe rule (no client traffic)',
        "  - warm the target's prefix cache through its probe rule",
        'phase 5/12 shift-33:',
        '  - weights: target 33%, source 67%',
        '  - let the gateway apply the route change (5 s)',
        '  - hold 33% for 60 s, guarded',
        '  undo: weights back: target 0%, source 100%',
        '  undo: let the gateway apply the route change (5 s)',
        'phase 6/12 swap-2:',
        "  - take the source's (llmd) pods beyond 1 replica(s) out of its pool",
        '  - let the gateway see the pool change (5 s)',
        "  - let the retired pods' requests in flight finish (30 s)",
        '  - scale the source (llmd) to 1 replica(s)',
        "  - delete the source's retired pods still there (drained 30 s)",
        '  - deploy the target (kserve) with 2 replica(s) in the room the source left, attached to the front route',
        '  - let the gateway apply the route change (5 s)',
        "  undo: take the target's (kserve) pods beyond 1 replica(s) out of its pool",
        '  undo: let the gateway see the pool change (5 s)',
        "  undo: let the retired pods' requests in flight finish (30 s)",
        '  undo: scale the target (kserve) to 1 replica(s)',
        "  undo: delete the target's retired pods still there (drained 30 s)",
        '  undo: delete the retired source pods once drained (30 s)',
        '  undo: scale the source (llmd) back to 2 replica(s)',
        'phase 7/12 shift-67:',
        '  - weights: target 67%, source 33%',
        '  - let the gateway apply the route change (5 s)',
        '  - hold 67% for 60 s, guarded',
        '  undo: weights back: target 33%, source 67%',
        '  undo: let the gateway apply the route change (5 s)',
        'phase 8/12 shift-100:',
        '  - weights: target 100%, source 0%',
        '  - let the gateway apply the route change (5 s)',
        '  - hold 100% for 60 s, guarded',
        '  undo: weights back: target 67%, source 33%',
        '  undo: let the gateway apply the route change (5 s)',
        'phase 9/12 drain:',
        '  - the source leaves the front route (its probe rule too)',
        '  - let the gateway apply the route change (5 s)',
        "  - let the source's in-flight requests finish (30 s)",
        "  undo: the source's probe rule back",
        '  undo: let the gateway apply the route change (5 s)',
        'phase 10/12 remove-source:',
        '  - remove the source (llmd); the Gateway stays',
        '  - verify clients are served: every model through the client rules (no probe header), as clients call it',
        '  undo: deploy the source (llmd) again behind the front route (1 replica)',
        "  undo: the source's probe rule back",
        '  undo: let the gateway apply the route change (5 s)',
        '  undo: verify the source through its probe rule',
        'phase 11/12 scale-target:',
        '  - scale the target (kserve) to 3 replicas in the room the source left',
        '  - let the gateway apply the route change (5 s)',
        "  undo: take the target's (kserve) pods beyond 2 replica(s) out of its pool",
        '  undo: let the gateway see the pool change (5 s)',
        "  undo: let the retired pods' requests in flight finish (30 s)",
        '  undo: scale the target (kserve) to 2 replica(s)',
        "  undo: delete the target's retired pods still there (drained 30 s)",
        'phase 12/12 handover:',
        '  - the front route(s) and the Gateway now belong to the kserve deployment',
        '  undo: the front route(s) and the Gateway back to the llmd deployment',
        "guards during every hold: a failed target probe, target latency above max(3 x the source's, +1 s), "
        'fewer ready target endpoints than desired, a client request answered 5xx from the target (with '
        '--metrics-url) -> weights back to the last good step, '
        'then stop (state kept: --resume or --rollback)',
    ]


def test_the_plan_in_words_with_surge_and_the_waits_given():
    """baseline from kserve: the target beside the source, no cache to warm, no Gateway of the source's to hand
    over; every wait as given."""
    m = migration("baseline", "sim", "kserve", "llmd", KSERVE_ROUTE, settle=3, drain=7, hold=11, steps=(10, 100))
    assert describe(m) == [
        'migrate baseline (sim) from kserve to llmd in namespace shop, behind Gateway shop/caching-gateway (kept)',
        'weights (target %): 10 -> 100; hold 11 s each; settle 3 s after each route change; drain 7 s',
        'phase 1/9 front:',
        "  - own the front route(s): client rules and a probe rule to the source's pool",
        '  - let the gateway apply the route change (3 s)',
        '  undo: delete the front route(s)',
        '  undo: let the gateway apply the route change (3 s)',
        'phase 2/9 retire-source-route:',
        '  - serve the source (kserve) through the front route: its own route goes',
        '  - let the gateway apply the route change (3 s)',
        "  undo: restore the source's own route (kserve)",
        '  undo: let the gateway apply the route change (3 s)',
        'phase 3/9 deploy-target:',
        "  - add the target's probe rule to the front route(s)",
        '  - deploy the target (llmd) beside the source, attached to the front route',
        '  - let the gateway apply the route change (3 s)',
        '  undo: remove the target (llmd)',
        "  undo: the front route(s) without the target's probe rule",
        'phase 4/9 verify-target:',
        '  - verify the target through its probe rule (no client traffic)',
        'phase 5/9 shift-10:',
        '  - weights: target 10%, source 90%',
        '  - let the gateway apply the route change (3 s)',
        '  - hold 10% for 11 s, guarded',
        '  undo: weights back: target 0%, source 100%',
        '  undo: let the gateway apply the route change (3 s)',
        'phase 6/9 shift-100:',
        '  - weights: target 100%, source 0%',
        '  - let the gateway apply the route change (3 s)',
        '  - hold 100% for 11 s, guarded',
        '  undo: weights back: target 10%, source 90%',
        '  undo: let the gateway apply the route change (3 s)',
        'phase 7/9 drain:',
        '  - the source leaves the front route (its probe rule too)',
        '  - let the gateway apply the route change (3 s)',
        "  - let the source's in-flight requests finish (7 s)",
        "  undo: the source's probe rule back",
        '  undo: let the gateway apply the route change (3 s)',
        'phase 8/9 remove-source:',
        '  - remove the source (kserve); the Gateway stays',
        '  - verify clients are served: every model through the client rules (no probe header), as clients call it',
        '  undo: deploy the source (kserve) again behind the front route',
        "  undo: the source's probe rule back",
        '  undo: let the gateway apply the route change (3 s)',
        '  undo: verify the source through its probe rule',
        'phase 9/9 handover:',
        '  - the front route(s) and the Gateway if the deployment made it now belong to the llmd deployment',
        '  undo: the front route(s) and the Gateway if the deployment made it back to the kserve deployment',
        "guards during every hold: a failed target probe, target latency above max(3 x the source's, +1 s), "
        'fewer ready target endpoints than desired, a client request answered 5xx from the target (with '
        '--metrics-url) -> weights back to the last good step, '
        'then stop (state kept: --resume or --rollback)',
    ]



def test_refusals_name_the_valid_choice_and_the_way_out():
    with pytest.raises(LightrailError) as err:
        migration(to="llmd")
    assert str(err.value) == "pattern caching already runs on the llmd stack; valid --to: kserve"
    with pytest.raises(LightrailError) as err:
        migration(source="kserve", route=KSERVE_ROUTE, to="kserve")
    assert str(err.value) == "pattern caching already runs on the kserve stack; valid --to: llmd"
    with pytest.raises(LightrailError) as err:
        migration("baseline", "gpu", surge=False)
    assert str(err.value) == ("--no-surge swaps one replica at a time, and baseline runs 1: while it is swapped, nothing "
                              "would serve (free room for the target beside the source and migrate without --no-surge, "
                              "or deploy with --replicas=2 or more first)")


def test_a_one_replica_source_migrates_with_surge():
    from lightrail.migrate.plan import check_migratable

    check_migratable(build_plan(Request(pattern="baseline", accel="gpu", stack="llmd", namespace="shop")), "kserve")


@pytest.mark.parametrize("options,error", [
    ({"steps": (50, 10, 100)}, "--steps must rise strictly from 1..99 to 100 (percent for the target), got 50,10,100"),
    ({"steps": ()}, "--steps must rise strictly from 1..99 to 100 (percent for the target), got nothing"),
    ({"latency_margin": -0.5}, "--latency-margin must not be negative"),
    ({"drain": -1}, "--drain must not be negative"),
])
def test_options_say_what_is_wrong_with_them(options, error):
    with pytest.raises(LightrailError) as err:
        Options(**options)
    assert str(err.value) == error


def test_no_waiting_at_all_is_allowed():
    zero = Options(hold=0, settle=0, drain=0, timeout=0, latency_margin=0)
    assert [op.seconds for p in migration(hold=0, settle=0, drain=0).phases for op in p.forward if op.seconds] == []
    assert zero.hold == zero.latency_margin == 0


def test_a_model_server_without_known_client_rules_is_refused():
    plan = build_plan(Request(pattern="caching", accel="sim", stack="llmd", namespace="shop"))
    rules = {s.name: client_rules(LLMD_ROUTE) for s in plan.servers}
    first = plan_migration(plan, "kserve", GATEWAY, rules, {s.name: [] for s in plan.servers})
    assert not first.source_fronted and first.phases[1].name == "retire-source-route"   # unless told: a first one
    with pytest.raises(LightrailError) as err:
        plan_migration(plan, "kserve", GATEWAY, {}, {}, Options())
    assert str(err.value) == "no client rules known for caching-qwen2-5-3b-instruct"


def test_no_surge_weights_go_back_one_step_at_a_time():
    m = migration(surge=False)      # caching: 3 replicas
    src, tgt = "caching-qwen2-5-3b-instruct", "caching-qwen2-5-3b-instruct-inference-pool"
    shifts = [p for p in m.phases if p.name.startswith("shift-")]
    assert [client_weights(p.backward[0].objects[0]) for p in shifts] == [{src: 100}, {src: 67, tgt: 33},
                                                                          {src: 33, tgt: 67}]
    assert [op.weight for p in shifts for op in p.forward if op.action == "hold"] == [33, 67, 100]


def test_a_migration_back_keeps_the_front_route_and_hands_the_gateway_back():
    """The source (kserve) already runs behind the front route an earlier migration from llmd left it, with
    that migration's Gateway: no own route to retire; undone, the routes are the source deployment's again."""
    m = migration("caching", "sim", "kserve", "llmd", LLMD_ROUTE, fronted=True)
    assert [p.name for p in m.phases][:3] == ["front", "deploy-target", "verify-target"]
    front = m.phases[0]
    assert [(op.action, op.title) for op in front.backward] == [
        ("apply", "front route(s) back as they were"),
        ("relabel", "the front route(s) belong to the kserve deployment again, no migration's"),
        ("settle", "let the gateway apply the route change (5 s)")]
    (before,), unmark = front.backward[0].objects, front.backward[1]
    assert client_weights(before) == {"caching-qwen2-5-3b-instruct-inference-pool": 100}
    assert unmark.labels[MIGRATION_LABEL] is None and unmark.labels["lightrail.dev/stack"] == "kserve"
    assert [o["metadata"]["name"] for o in unmark.objects] == ["caching-qwen2-5-3b-instruct-front"]
    handover = m.phases[-1]
    assert handover.forward[0].releases == handover.backward[0].releases == ("caching-infra",)
    assert handover.forward[0].title == "the front route(s) and the Gateway now belong to the llmd deployment"


def test_multimodel_moves_each_models_route_and_hands_the_body_router_over_with_the_gateway():
    """Each model keeps its front route matching its model header; its probe rules match that header
    too (two models' probe rules on one Gateway must not tie), and with one header more they win over
    the client rule. The llmd source's body-based router stays with the Gateway, changing hands."""
    m = migration("multimodel", "sim", "llmd", "kserve", LLMD_ROUTE)
    routes = next(p for p in m.phases if p.name == "shift-50").forward[0].objects
    assert [r["metadata"]["name"] for r in routes] == ["multimodel-qwen2-5-3b-instruct-front",
                                                       "multimodel-phi-3-mini-4k-instruct-front"]
    for route, model in zip(routes, ("Qwen/Qwen2.5-3B-Instruct", "microsoft/Phi-3-mini-4k-instruct")):
        header = {"type": "Exact", "name": MODEL_HEADER, "value": model}
        *probes, client = route["spec"]["rules"]
        assert client["matches"] == [{"headers": [{"name": MODEL_HEADER, "type": "Exact", "value": model}],
                                      "path": {"type": "PathPrefix", "value": "/"}}]
        assert [p["matches"][0]["headers"] for p in probes] == [
            [header, {"type": "Exact", "name": PROBE_HEADER, "value": "source"}],
            [header, {"type": "Exact", "name": PROBE_HEADER, "value": "target"}]]
        assert sorted(client_weights(route).values()) == [50, 50]
    handover = m.phases[-1]
    assert handover.forward[0].releases == ("multimodel-infra", "multimodel-bbr")
    assert handover.forward[0].title == ("the front route(s) and the Gateway and its body-based router now belong to "
                                         "the kserve deployment")
    # the target answers to the names clients send through this Gateway, and brings no router of its own
    assert m.target.served_models == m.source.served_models == ("Qwen/Qwen2.5-3B-Instruct",
                                                               "microsoft/Phi-3-mini-4k-instruct")
    assert not m.target.body_router and not any(u.name == "multimodel-bbr" for u in m.target.units)
    back = migration("multimodel", "sim", "kserve", "llmd", LLMD_ROUTE, fronted=True)
    assert back.source.served_models == back.target.served_models == m.source.served_models
    assert not any(u.name == "multimodel-bbr" for u in back.target.units + back.source.units)
    assert back.phases[-1].forward[0].releases == ("multimodel-infra", "multimodel-bbr")


def test_multimodel_from_kserves_shared_gateway_keeps_the_qualified_names_and_hands_the_router_over():
    """On KServe's shared gateway clients send publishers/<namespace>/models/<model>: an llmd target
    behind the front route there answers to those names first (vLLM answers with the first) and brings
    no router; the kserve source's router (a kustomize unit) changes hands, no Gateway release does."""
    from lightrail.llmd.values import modelservice_values

    m = migration("multimodel", "gpu", "kserve", "llmd", KSERVE_ROUTE, gateway=KSERVE_GATEWAY)
    qualified = ("publishers/shop/models/Qwen/Qwen2.5-3B-Instruct",
                 "publishers/shop/models/microsoft/Phi-3-mini-4k-instruct")
    assert m.source.served_models == m.target.served_models == qualified
    assert not m.target.body_router and not any(u.name.endswith("-bbr") for u in m.target.units)
    container = modelservice_values(m.target, m.target.servers[0])["decode"]["containers"][0]
    i = container["args"].index("--served-model-name")
    assert container["args"][i + 1:i + 3] == [qualified[0], "Qwen/Qwen2.5-3B-Instruct"]
    handover = m.phases[-1]
    assert handover.forward[0].releases == handover.backward[0].releases == ("multimodel-bbr",)
    assert handover.forward[0].title == ("the front route(s) and the Gateway if the deployment made it and its "
                                         "body-based router now belong to the llmd deployment")
    back = migration("multimodel", "sim", "llmd", "kserve", KSERVE_ROUTE, fronted=True, gateway=KSERVE_GATEWAY)
    assert back.source.served_models == back.target.served_models == qualified
    assert back.phases[-1].forward[0].releases == ("multimodel-bbr",)
    sim = modelservice_values(back.source, back.source.servers[1])["decode"]["containers"][0]
    assert sim["modelCommand"] == "imageDefault" and sim["args"][:3] == [
        "--served-model-name", qualified[1], "microsoft/Phi-3-mini-4k-instruct"]
    # an llmd deployment on its own Gateway keeps the plain names and the flags it had
    own = build_plan(Request(pattern="multimodel", accel="sim", stack="llmd", namespace="shop"))
    assert "--served-model-name" not in modelservice_values(own, own.servers[0])["decode"]["containers"][0]["args"]


def test_a_model_route_matching_two_model_names_is_refused():
    route = body_routed(LLMD_ROUTE, "a")
    route["spec"]["rules"].append({**copy.deepcopy(route["spec"]["rules"][0]), "matches": [
        {"headers": [{"name": MODEL_HEADER, "type": "Exact", "value": "b"}], "path": {"type": "PathPrefix", "value": "/"}}]})
    plan = build_plan(Request(pattern="multimodel", accel="sim", stack="llmd", namespace="shop"))
    with pytest.raises(LightrailError, match="matches 2 model names; a model's route matches one"):
        plan_migration(plan, "kserve", GATEWAY, {s.name: client_rules(route) for s in plan.servers},
                       {s.name: route["spec"]["parentRefs"] for s in plan.servers})


def test_a_kserve_source_keeps_its_paths_and_its_probes_need_no_router():
    """KServe's real managed route (its preset, templated as KServe does) has a rule on the model header
    too; without body-based routing nothing fills that header, so the probe rules must not require it.
    Clients call the model under /<namespace>/<name>: the client-path check after the source is gone
    calls it there."""
    from lightrail.migrate.routes import client_prefix, is_probe
    from lightrail.settings import schemas_dir
    from lightrail.testing.presets import preset, templated

    isvc = {"metadata": {"name": "baseline-qwen2-5-3b-instruct", "namespace": "shop"},
            "spec": {"model": {"name": "Qwen/Qwen2.5-3B-Instruct"}}}
    route = templated(preset(schemas_dir(), "kserve-config-llm-router-route")["spec"]["router"]["route"], isvc)["http"]
    route["spec"]["parentRefs"] = KSERVE_ROUTE["spec"]["parentRefs"]
    m = migration("baseline", "sim", "kserve", "llmd", route)
    assert [r for r in m.phases[0].forward[0].objects[0]["spec"]["rules"] if is_probe(r)] == [
        r for r in m.phases[2].forward[0].objects[0]["spec"]["rules"] if is_probe(r)][:1]   # the target's comes later
    front = m.phases[2].forward[0].objects[0]
    probes = [r for r in front["spec"]["rules"] if is_probe(r)]
    assert [p["matches"][0]["headers"] for p in probes] == [[{"type": "Exact", "name": PROBE_HEADER, "value": side}]
                                                            for side in ("source", "target")]
    assert any(h.get("name") == MODEL_HEADER for r in m.rules[m.source.servers[0].name] for mt in r["matches"]
               for h in mt.get("headers") or [])      # the client rule on the header is kept, as KServe made it
    assert client_prefix(list(m.rules[m.source.servers[0].name])) == "/shop/baseline-qwen2-5-3b-instruct"
    assert client_prefix(client_rules(LLMD_ROUTE)) == ""
    remove = next(p for p in m.phases if p.name == "remove-source")
    assert [(op.action, op.side) for op in remove.forward] == [("remove", "source"), ("verify", "clients")]
