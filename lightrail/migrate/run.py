"""Run a migration against a cluster: observe, preflight, then phase by phase with the state saved.

The imperative shell around `migrate.plan`: each operation is one thing the existing flows
already do (apply objects, deploy a plan, tear a side down, relabel), a timed wait, requests
through the Gateway (`probes`), or pods leaving their pool (`retire`, --no-surge). The state
ConfigMap is written before and after every phase, so Ctrl-C, kill -9 or a lost connection leave
a position that `--resume` finishes and `--rollback` undoes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from lightrail.errors import LightrailError
from lightrail.migrate import probes, retire
from lightrail.migrate.context import Context, indent
from lightrail.migrate.guards import GuardTripped
from lightrail.migrate.plan import Migration, Op, Options, fronted, gateway_releases, plan_migration, weights
from lightrail.migrate.preflight import (ISTIOD_SELECTOR, Problem, gateway_fixed, gateway_programmed, gateway_splits,
                                         selectors_apart, source_present, target_selector)
from lightrail.migrate.routes import PROBE_HEADER, client_rules, client_weights, own_route_name, parent_gateway, pool_name
from lightrail.migrate.state import State, from_config_map, state_name
from lightrail.ops import checks as ck
from lightrail.ops import flows
from lightrail.ops import steps as st
from lightrail.ops import teardown as td
from lightrail.ops.deploy import conflicts, pod_security_refusal
from lightrail.ops.desired import desired_state
from lightrail.ops.executor import DryRun, Live as LiveExecutor
from lightrail.ops.objects import (FIELD_MANAGER, GATEWAY_NAME_LABEL, HELM_RELEASE, MIGRATION_LABEL, PATTERN_LABEL,
                                   STACK_LABEL, annotations, generated, labels, meta, stub)
from lightrail.plan import UNIT_LABEL, Plan, build_plan, front_route
from lightrail.smoke import checks as smoke

ROUTES = ("gateway.networking.k8s.io/v1", "HTTPRoute")
POOLS = ("inference.networking.k8s.io/v1", "InferencePool")


# ---------------------------------------------------------------------------------------------
# observe and preflight (reads only)


def observe_source(cluster, source: Plan) -> tuple[dict, dict, tuple[str, str], bool]:
    """The source's client rules and parents per model, its Gateway, and whether it already sits
    behind a front route (a migration back)."""
    rules, parents, gateways, fronted_by = {}, {}, set(), []
    for server in source.servers:
        route = cluster.get(*ROUTES, front_route(server), source.namespace)
        if route is not None and labels(route).get(STACK_LABEL) == source.stack:
            fronted_by.append(server.name)
        else:
            route = cluster.get(*ROUTES, own_route_name(source, server), source.namespace)
        if route is None:
            raise LightrailError(f"no route of the source found for {server.name} (HTTPRoute "
                                 f"{source.namespace}/{own_route_name(source, server)})",
                                 fix=f"is pattern {source.pattern.name} deployed on {source.stack} in namespace "
                                     f"{source.namespace}? see `invoke status`")
        rules[server.name] = client_rules(route)
        parents[server.name] = [p for p in route["spec"]["parentRefs"] if p.get("kind", "Gateway") == "Gateway"]
        gateways.add(parent_gateway(route))
    if len(gateways) != 1:
        raise LightrailError(f"the source's routes attach to {len(gateways)} Gateways; a migration keeps exactly one")
    return rules, parents, gateways.pop(), bool(fronted_by)


def _istiods(cluster) -> list[dict]:
    """istiod's Deployments in any namespace; none where they cannot be listed (namespace-scoped access)."""
    try:
        return cluster.list("apps/v1", "Deployment", selector=ISTIOD_SELECTOR)
    except LightrailError:
        return []


def preflight(m: Migration, ctx: Context) -> list[Problem]:
    """Every reason this migration cannot start, from reads only."""
    cluster, ns = ctx.cluster, m.namespace
    problems: list[Problem] = []
    gw = cluster.get("gateway.networking.k8s.io/v1", "Gateway", m.gateway[1], m.gateway[0])
    cls = cluster.get("gateway.networking.k8s.io/v1", "GatewayClass", gw["spec"]["gatewayClassName"]) if gw else None
    if (p := gateway_splits(gw, cls, m.gateway)) is not None:
        problems.append(p)
    else:
        problems += [p for p in (gateway_fixed(gw, cls, _istiods(cluster)), gateway_programmed(gw, m)) if p]
    pools = {pool_name(m.source, s): cluster.get(*POOLS, pool_name(m.source, s), ns) for s in m.source.servers}
    problems += source_present(m, pools)
    desired = desired_state(m.target, ctx.charts)
    live = flows.observe_live(cluster, m.target, desired)
    problems += [Problem(c, "remove it, or migrate in another namespace") for c in conflicts(m.target, desired, live)]
    if (refusal := pod_security_refusal(m.target, live.namespace_labels)) is not None:
        problems.append(Problem(f"target ({m.target.stack}): {refusal.message}", refusal.fix))
    checks = flows.doctor(ctx.target, cluster, m.target.stack, m.target.gateway.provider, m.target, desired.objects,
                          ctx.token is not None)
    for c in ck.failed(c for c in checks if c.name != "capacity"):
        problems.append(Problem(f"target ({m.target.stack}): {c.name}: {c.detail}", c.fix))
    surge = m.options.surge
    capacity = ck.capacity_check(m.target, cluster.list("v1", "Node"), cluster.list("v1", "Pod"), beside=surge)
    if capacity.status == ck.FAIL:
        problems.append(Problem(
            f"target ({m.target.stack}): no capacity {'beside' if surge else 'in place of'} the source: "
            f"{capacity.detail}",
            f"{capacity.fix}; " + ("the target runs beside the source until the weights have moved, or "
                                   "migrate with --no-surge (one replica at a time, in the source's room)"
                                   if surge else "--no-surge puts each target replica where a source replica ran")))
    pods = cluster.list("v1", "Pod", ns)
    target_pods = [o["spec"]["template"]["metadata"].get("labels") or {} for o in desired.objects
                   if o.get("kind") in ("Deployment", "LeaderWorkerSet") and "template" in o.get("spec", {})]
    if m.target.stack == "kserve":   # KServe makes the workload; its labels are KServe's selector plus ours
        target_pods = [{**target_selector(m, s), **m.target.labels} for s in m.target.servers]
    problems += selectors_apart(m, pods, target_pods)
    return problems


# ---------------------------------------------------------------------------------------------
# entry points


def start(source: Plan, to: str, options: Options, ctx: Context, confirm: Callable[[], None] = lambda: None) -> None:
    """A new migration: observe, preflight (refuse with every reason), save the state, run forward."""
    cluster = ctx.cluster
    if cluster is None:
        raise LightrailError("a migration needs the cluster the source runs on (even for --dry-run)",
                             fix="check the kube context with `invoke doctor`")
    existing = cluster.get("v1", "ConfigMap", state_name(source.pattern.name), source.namespace)
    if existing is not None:
        state = from_config_map(existing)
        raise LightrailError(f"a migration of {source.pattern.name} ({state.source['stack']} -> {state.to}) is in "
                             f"progress: phase {state.phase}, target at {state.weight}%, {state.status}",
                             fix="continue it with --resume, or undo it with --rollback")
    rules, parents, gateway, was_fronted = observe_source(cluster, source)
    if was_fronted:
        source = fronted(source, gateway)
    m = plan_migration(source, to, gateway, rules, parents, options, was_fronted)
    problems = preflight(m, ctx)
    if problems:
        raise LightrailError(f"cannot migrate {m.pattern} to {to}; nothing was changed:\n  "
                             + "\n  ".join(p.what + (f"\n      fix: {p.fix}" if p.fix else "") for p in problems))
    ctx.checked = True
    if not ctx.dry_run and not ctx.url:
        raise LightrailError("the migration probes each side through the Gateway: give its address with --url",
                             fix=f"e.g. `kubectl -n {gateway[0]} port-forward svc/<gateway service> 8080:80` and "
                                 "--url=http://127.0.0.1:8080")
    if not ctx.dry_run:
        probes.reachable(m, ctx)
    for line in describe_short(m):
        ctx.out(line)
    if ctx.dry_run:
        return dry_run(m, ctx)
    confirm()
    state = State.start(m)
    state.note("started")
    save(state, ctx)
    forward(m, state, ctx)


def resume(pattern: str, namespace: str, ctx: Context, rollback: bool = False) -> None:
    """Continue an interrupted migration (or undo it), from the state in the cluster."""
    if ctx.cluster is None:
        raise LightrailError("--resume and --rollback read the migration's state from the cluster; none is reachable")
    cm = ctx.cluster.get("v1", "ConfigMap", state_name(pattern), namespace)
    if cm is None:
        raise LightrailError(f"no migration of {pattern} in progress in namespace {namespace} (no ConfigMap "
                             f"{state_name(pattern)})", fix="start one with --to=kserve|llmd")
    state = from_config_map(cm)
    m = state.migration()
    if rollback or state.direction == "rollback":
        ctx.out(f"rolling back the migration of {pattern} ({m.source.stack} -> {m.target.stack}) from phase "
                f"{state.phase} (target at {state.weight}%)")
        if ctx.dry_run:
            for phase in reversed(m.phases[:min(state.position + 1, len(m.phases))]):
                ctx.out(f"undo {phase.name}:" + "".join(f"\n  - {op.title}" for op in phase.backward))
            return
        if not ctx.url:
            raise LightrailError("the rollback verifies the source through the Gateway: give its address with --url")
        probes.reachable(m, ctx)
        return backward(m, state, ctx)
    ctx.out(f"resuming the migration of {pattern} ({m.source.stack} -> {m.target.stack}) at phase {state.phase} "
            f"(target at {state.weight}%)")
    if ctx.dry_run:
        return dry_run(m, ctx, start=state.position)
    if not ctx.url:
        raise LightrailError("the migration probes each side through the Gateway: give its address with --url")
    probes.reachable(m, ctx)
    forward(m, state, ctx)


def describe_short(m: Migration) -> list[str]:
    return [f"migrate {m.pattern} ({m.source.accel}) from {m.source.stack} to {m.target.stack} in namespace "
            f"{m.namespace}, behind Gateway {m.gateway[0]}/{m.gateway[1]} (kept, never replaced)",
            f"weights (target %): {' -> '.join(str(w) for w in weights(m))}"
            + ("" if m.options.surge else " (--no-surge: each step swaps one replica)")
            + f"; hold {m.options.hold:.0f} s each"]


# ---------------------------------------------------------------------------------------------
# the two directions


def forward(m: Migration, state: State, ctx: Context) -> None:
    state.direction, state.status, state.reason = "forward", "running", ""
    try:
        for i in range(state.position, len(m.phases)):
            phase = m.phases[i]
            state.position, state.phase = i, phase.name
            state.note("phase started")
            save(state, ctx)
            ctx.out(f"phase {i + 1}/{len(m.phases)} {phase.name}")
            if phase.name == "verify-target":
                state.baseline = ctx.baseline = probes.baseline(m, ctx)
                state.note(f"source baseline {ctx.baseline * 1000:.0f} ms")
            ctx.baseline = ctx.baseline or state.baseline
            for op in phase.forward:
                run_op(m, op, ctx, state)
            state.position = i + 1
            state.note("phase done")
            save(state, ctx)
    except GuardTripped as err:
        last = m.phases[state.position]
        for op in last.backward:     # the last good weights
            run_op(m, op, ctx, state)
        _pause(m, state, ctx, f"guard tripped at {last.name}: {err}; weights are back at the last good step")
        raise LightrailError(f"migration paused: guard tripped at {last.name}, weights back at the last good step: "
                             f"{err}",
                             fix=f"fix the target, then `invoke migrate --pattern={m.pattern} -n {m.namespace} "
                                 "--resume`, or undo everything with `--rollback`") from None
    except KeyboardInterrupt:
        _pause(m, state, ctx, "interrupted (Ctrl-C)")
        ctx.out(f"interrupted during phase {state.phase}; the weights stay where they are (target {state.weight}%). "
                f"Continue with `invoke migrate --pattern={m.pattern} -n {m.namespace} --resume`, or undo with "
                "`--rollback`")
        raise
    except LightrailError as err:
        _pause(m, state, ctx, f"failed: {err}")
        raise LightrailError(f"migration stopped in phase {state.phase}: {err}",
                             fix=f"`invoke migrate --pattern={m.pattern} -n {m.namespace} --resume` retries it; "
                                 "`--rollback` undoes the migration") from None
    _delete_state(m, ctx)
    ctx.out(f"migrated: {m.pattern} now runs on {m.target.stack} behind Gateway {m.gateway[0]}/{m.gateway[1]}")


def backward(m: Migration, state: State, ctx: Context) -> None:
    state.direction, state.status, state.reason = "rollback", "running", ""
    try:
        for i in range(min(state.position, len(m.phases) - 1), -1, -1):
            phase = m.phases[i]
            state.position, state.phase = i, phase.name
            state.note("undo started")
            save(state, ctx)
            ctx.out(f"undo phase {i + 1}/{len(m.phases)} {phase.name}")
            for op in phase.backward:
                run_op(m, op, ctx, state)
    except KeyboardInterrupt:
        _pause(m, state, ctx, "rollback interrupted (Ctrl-C)")
        ctx.out(f"interrupted while undoing {state.phase}; run `invoke migrate --pattern={m.pattern} "
                f"-n {m.namespace} --rollback` again to finish")
        raise
    except LightrailError as err:
        _pause(m, state, ctx, f"rollback failed: {err}")
        raise LightrailError(f"rollback stopped in phase {state.phase}: {err}",
                             fix="run `--rollback` again once the cause is fixed") from None
    _delete_state(m, ctx)
    ctx.out(f"rolled back: {m.pattern} runs on {m.source.stack} as before the migration")


def _pause(m: Migration, state: State, ctx: Context, reason: str) -> None:
    state.status, state.reason = "paused", reason
    state.note(reason)
    try:
        save(state, ctx)
    except (LightrailError, KeyboardInterrupt):
        ctx.out("note: the state could not be saved; --resume reruns the phase it last recorded")


def save(state: State, ctx: Context) -> None:
    ctx.cluster.apply(state.config_map(ctx.target.namespace), FIELD_MANAGER)


def _delete_state(m: Migration, ctx: Context) -> None:
    ctx.cluster.run("kubectl", ctx.target.kubectl("delete", "configmap", state_name(m.pattern), "-n", m.namespace,
                                                  "--ignore-not-found"), None, 60)


# ---------------------------------------------------------------------------------------------
# operations


def run_op(m: Migration, op: Op, ctx: Context, state: State | None = None) -> None:
    if ctx.dry_run:
        return _dry(m, op, ctx)
    executor = LiveExecutor(ctx.cluster, ctx.out, ctx.token)
    if op.action == "apply":
        executor.run(st.apply(ctx.target, list(op.objects), op.title, force=True))
        if state is not None and op.objects:
            state.weight = _target_weight(m, op.objects[0])
            save(state, ctx)
    elif op.action == "delete":
        executor.run(st.delete(ctx.target, list(op.objects), op.title, timeout=120))
    elif op.action == "deploy":
        ctx.out(f"- {op.title}")
        _deploy(m, op, ctx)
        if op.side == "target":
            probes.await_endpoints(m, op, ctx)
    elif op.action == "remove":
        ctx.out(f"- {op.title}")
        _remove(m, op.side, ctx)
    elif op.action == "retire":
        ctx.out(f"- {op.title}")
        retire.retire(m, op, ctx)
    elif op.action == "release":
        ctx.out(f"- {op.title}")
        retire.release(m, op, ctx)
    elif op.action == "relabel":
        for step in _relabel_steps(m, op, ctx):
            executor.run(step)
    elif op.action in ("settle", "drain"):
        ctx.wait(op.title, op.seconds)
    elif op.action == "verify":
        probes.verify(m, op.side, ctx)
    elif op.action == "warm":
        probes.warm(m, ctx)
    elif op.action == "hold":
        probes.hold(m, op, ctx, state)
    else:
        raise ValueError(op.action)


def _deploy(m: Migration, op: Op, ctx: Context) -> None:
    """One side deployed (or its dry run) as `invoke deploy` would, except doctor's checks when the
    preflight of this run made them (a migration checks the cluster once)."""
    flows.deploy(_side_plan(m, op), ctx.target, ctx.cluster, dry_run=ctx.dry_run, out=indent(ctx.out),
                 token=ctx.token, timeout=m.options.timeout, charts=ctx.charts, dry=ctx.dry if ctx.dry_run else None,
                 progress=ctx.progress, checked=ctx.checked)


def _side_plan(m: Migration, op: Op) -> Plan:
    if op.side == "target":
        plan = m.target
    elif op.front:
        plan = m.source if m.source_fronted else fronted(m.source, m.gateway)
    else:
        plan = m.source
    return build_plan(replace(plan.request, replicas=op.replicas)) if op.replicas else plan


def _target_weight(m: Migration, route: dict) -> int:
    weights = client_weights(route)
    total = sum(weights.values())
    return round(100 * weights.get(pool_name(m.target, m.target.servers[0]), 0) / total) if total else 0


def kept_gateway(m: Migration, obj: dict) -> bool:
    """The Gateway clients use: never removed, whichever side made it (llmd's infra release, or the
    kserve stack's HTTPS Gateway of --tls-secret / --cert-manager-issuer)."""
    return (obj.get("kind") == "Gateway" and meta(obj).get("name") == m.gateway[1]
            and meta(obj).get("namespace") == m.gateway[0])


def in_releases(obj: dict, releases: tuple[str, ...]) -> bool:
    """Whether an object belongs to one of these helm releases (llmd) or kustomize units (kserve)."""
    return annotations(obj).get(HELM_RELEASE) in releases or labels(obj).get(UNIT_LABEL) in releases


def spared(m: Migration):
    """What removing a side leaves: the front routes, the state, and the kept Gateway with what its
    controller made for it and what goes with it (gateway_releases)."""
    releases = gateway_releases(m)

    def spare(obj: dict) -> bool:
        return (MIGRATION_LABEL in labels(obj) or in_releases(obj, releases)
                or kept_gateway(m, obj) or labels(obj).get(GATEWAY_NAME_LABEL) == m.gateway[1]
                or obj.get("kind") in ("Endpoints", "EndpointSlice"))
    return spare, releases


def _remove(m: Migration, side: str, ctx: Context) -> None:
    plan = m.side(side)
    spare, releases = spared(m)
    flows.teardown(ctx.target, ctx.cluster, pattern=m.pattern, stack=plan.stack, keep_pvcs=m.options.keep_pvcs,
                   dry_run=ctx.dry_run, out=indent(ctx.out), timeout=m.options.timeout, spare=spare,
                   spare_releases=releases, dry=ctx.dry, progress=ctx.progress)


def _relabel_steps(m: Migration, op: Op, ctx: Context) -> list[st.Step]:
    """`kubectl label` of the front routes, and of the kept Gateway when the deployment made it (with
    what the op's helm releases hold); a label set to None is removed, from the front routes only
    (nothing else carries it)."""
    def step(title: str, objects: list[dict], lbl: dict) -> st.Step:
        args = [f"{k}-" if v is None else f"{k}={v}" for k, v in lbl.items()]
        return st.Step(title, tool="kubectl", objects=tuple(objects),
                       args=ctx.target.kubectl("label", "--overwrite", *args, "-f", "-"))

    steps = [step(op.title, list(op.objects), dict(op.labels))]
    if ctx.cluster is not None:   # the deployment's objects, and its router's EnvoyFilter in KServe's namespace
        mine = td.select(flows.find_labelled(ctx.cluster, f"{PATTERN_LABEL}={m.pattern}"), m.namespace, m.pattern)
        held = [stub(o) for o in mine if (in_releases(o, op.releases) or kept_gateway(m, o)) and not generated(o)]
        if held:
            names = ", ".join(sorted({f"{o['kind']}/{meta(o)['name']}" for o in held}))
            steps.append(step(f"{op.title}: {names}", held, {k: v for k, v in op.labels.items() if v is not None}))
    return steps


# ---------------------------------------------------------------------------------------------
# dry run


def dry_run(m: Migration, ctx: Context, start: int = 0) -> None:
    """Every phase from `start`, with the commands and objects of its operations; then the undo path."""
    ctx.dry = ctx.dry or DryRun(ctx.out)
    for i in range(start, len(m.phases)):
        phase = m.phases[i]
        ctx.out(f"== phase {i + 1}/{len(m.phases)} {phase.name} ==")
        for op in phase.forward:
            _dry(m, op, ctx)
        if phase.backward:
            ctx.out("   undo (--rollback, or automatically for a shift whose guard trips): "
                    + "; ".join(op.title for op in phase.backward))
    ctx.out(ctx.dry.summary(ctx.target.context, ctx.target.namespace))


def _dry(m: Migration, op: Op, ctx: Context) -> None:
    dry = ctx.dry = ctx.dry or DryRun(ctx.out)
    if op.action == "apply":
        dry.run(st.apply(ctx.target, list(op.objects), op.title, force=True))
    elif op.action == "delete":
        dry.run(st.delete(ctx.target, list(op.objects), op.title, timeout=120))
    elif op.action == "relabel":
        for step in _relabel_steps(m, op, ctx):
            dry.run(step)
    elif op.action == "deploy":
        dry.count += 1
        ctx.out(f"[{dry.count}] {op.title}: as `invoke deploy` would, now:")
        _deploy(m, op, ctx)
        if op.side == "target":
            ctx.out(f"    then wait until every target replica is ready ({op.replicas or m.target.servers[0].replicas} "
                    f"per model, timeout {m.options.timeout:.0f} s)")
    elif op.action == "remove":
        dry.count += 1
        ctx.out(f"[{dry.count}] {op.title}: as `invoke teardown` would, now:")
        _remove(m, op.side, ctx)
    else:
        dry.count += 1
        ctx.out(f"[{dry.count}] {op.title}" + ("" if op.action not in ("verify", "warm", "hold") else
                                              f" (requests to {smoke.mask_url(ctx.url) if ctx.url else '--url'} with "
                                              f"header {PROBE_HEADER}: {op.side or 'target'})"))
