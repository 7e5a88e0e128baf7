"""Run a migration against a cluster: observe, preflight, then phase by phase with the state saved.

The imperative shell around `migrate.plan`: each operation is one thing the existing flows
already do (apply objects, deploy a plan, tear a side down, relabel), or a timed wait with probes
through the Gateway. The state ConfigMap is written before and after every phase, so Ctrl-C,
kill -9 or a lost connection leave a position that `--resume` finishes and `--rollback` undoes.
"""
from __future__ import annotations

import json
import ssl
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import httpx

from lightrail.errors import LightrailError
from lightrail.migrate import gatewaymetrics, guards
from lightrail.migrate.plan import Migration, Op, Options, fronted, gateway_releases, plan_migration, weights
from lightrail.migrate.preflight import (ISTIOD_SELECTOR, Problem, gateway_fixed, gateway_splits, selectors_apart,
                                         source_present, target_selector)
from lightrail.migrate.routes import (PROBE_HEADER, client_prefix, client_rules, client_weights, own_route_name,
                                      parent_gateway, pool_name)
from lightrail.migrate.state import State, from_config_map, state_name
from lightrail.ops import checks as ck
from lightrail.ops import flows
from lightrail.ops import steps as st
from lightrail.ops.deploy import conflicts
from lightrail.ops.desired import desired_state
from lightrail.ops.executor import DryRun, Live as LiveExecutor
from lightrail.ops.objects import (FIELD_MANAGER, GATEWAY_NAME_LABEL, HELM_RELEASE, LABEL_PREFIX, MIGRATION_LABEL,
                                   STACK_LABEL, annotations, generated, labels, meta, stub)
from lightrail.ops.secrets import Token
from lightrail.ops.target import Target
from lightrail.plan import Plan, build_plan, front_route
from lightrail.progress import Progress, no_progress
from lightrail.render import to_yaml
from lightrail.smoke import checks as smoke
from lightrail.smoke.discovery import server_pod_labels

Out = Callable[[str], None]
ROUTES = ("gateway.networking.k8s.io/v1", "HTTPRoute")
POOLS = ("inference.networking.k8s.io/v1", "InferencePool")
PROBE_INTERVAL = 1.0     # seconds between guard probes during a hold
WARM_PROMPTS = 8
VERIFY_GRACE = 30.0      # seconds a new side may answer 503 (no endpoint the gateway knows yet) before verify fails
RETIRED_LABEL = f"{LABEL_PREFIX}/retired"          # on a pod taken out of its pool (--no-surge): <pattern>-<stack>
RETIRED_AT = f"{LABEL_PREFIX}/retired-at"          # when (epoch seconds): its drain counts from then
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"   # a ReplicaSet scaling down deletes it first
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"        # LWS deletes the highest groups first


class GuardTripped(LightrailError):
    pass


@dataclass
class Context:
    """Everything the operations need besides the migration itself."""

    target: Target
    cluster: object
    out: Out
    dry_run: bool
    url: str = ""                      # the Gateway, as this machine reaches it (probes)
    metrics_url: str = ""              # the gateway proxy's Prometheus counters (Istio), or none
    trust: ssl.SSLContext | bool = True  # how an https --url's certificate is checked (--ca-file)
    token: Token | None = None
    charts: Path | None = None
    dry: DryRun | None = None
    baseline: float | None = None      # the source's probe latency median (seconds)
    progress: Progress = no_progress   # live display of long waits (the CLI's), or none
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    seen: dict = field(default_factory=dict)


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
    elif (p := gateway_fixed(gw, cls, _istiods(cluster))) is not None:
        problems.append(p)
    pools = {pool_name(m.source, s): cluster.get(*POOLS, pool_name(m.source, s), ns) for s in m.source.servers}
    problems += source_present(m, pools)
    desired = desired_state(m.target, ctx.charts)
    live = flows.observe_live(cluster, m.target, desired)
    problems += [Problem(c, "remove it, or migrate in another namespace") for c in conflicts(m.target, desired, live)]
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
    if not ctx.dry_run and not ctx.url:
        raise LightrailError("the migration probes each side through the Gateway: give its address with --url",
                             fix=f"e.g. `kubectl -n {gateway[0]} port-forward svc/<gateway service> 8080:80` and "
                                 "--url=http://127.0.0.1:8080")
    if not ctx.dry_run:
        _reachable(m, ctx)
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
        _reachable(m, ctx)
        return backward(m, state, ctx)
    ctx.out(f"resuming the migration of {pattern} ({m.source.stack} -> {m.target.stack}) at phase {state.phase} "
            f"(target at {state.weight}%)")
    if ctx.dry_run:
        return dry_run(m, ctx, start=state.position)
    if not ctx.url:
        raise LightrailError("the migration probes each side through the Gateway: give its address with --url")
    _reachable(m, ctx)
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
                state.baseline = ctx.baseline = _baseline(m, ctx)
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
    cm = state.config_map(ctx.target.namespace)
    ctx.cluster.run("kubectl", ctx.target.kubectl("apply", "--server-side", "--force-conflicts",
                                                  f"--field-manager={FIELD_MANAGER}", "-f", "-"), to_yaml([cm]), 60)


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
        plan = _side_plan(m, op)
        flows.deploy(plan, ctx.target, ctx.cluster, dry_run=False, out=_indent(ctx.out), token=ctx.token,
                     timeout=m.options.timeout, charts=ctx.charts, progress=ctx.progress)
        if op.side == "target":
            _await_endpoints(m, op, ctx)
    elif op.action == "remove":
        ctx.out(f"- {op.title}")
        _remove(m, op.side, ctx)
    elif op.action == "retire":
        ctx.out(f"- {op.title}")
        _retire(m, op, ctx)
    elif op.action == "release":
        ctx.out(f"- {op.title}")
        _release(m, op, ctx)
    elif op.action == "relabel":
        for step in _relabel_steps(m, op, ctx):
            executor.run(step)
    elif op.action in ("settle", "drain"):
        _wait(op.title, op.seconds, ctx)
    elif op.action == "verify":
        _verify(m, op.side, ctx)
    elif op.action == "warm":
        _warm(m, ctx)
    elif op.action == "hold":
        _hold(m, op, ctx, state)
    else:
        raise ValueError(op.action)


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


def spared(m: Migration):
    """What removing a side leaves: the front routes, the state, and the kept Gateway with what its
    controller made for it."""
    releases = gateway_releases(m)

    def spare(obj: dict) -> bool:
        return (MIGRATION_LABEL in labels(obj) or annotations(obj).get(HELM_RELEASE) in releases
                or kept_gateway(m, obj) or labels(obj).get(GATEWAY_NAME_LABEL) == m.gateway[1]
                or obj.get("kind") in ("Endpoints", "EndpointSlice"))
    return spare, releases


def _remove(m: Migration, side: str, ctx: Context) -> None:
    plan = m.side(side)
    spare, releases = spared(m)
    flows.teardown(ctx.target, ctx.cluster, pattern=m.pattern, stack=plan.stack, keep_pvcs=m.options.keep_pvcs,
                   dry_run=ctx.dry_run, out=_indent(ctx.out), timeout=m.options.timeout, spare=spare,
                   spare_releases=releases, dry=ctx.dry, progress=ctx.progress)


# --- --no-surge: pods leave their pool, drain, then go ------------------------------------------


def _live(pod: dict) -> bool:
    m = meta(pod)
    return (pod.get("status") or {}).get("phase") == "Running" and not (m.get("deletion_timestamp")
                                                                        or m.get("deletionTimestamp"))


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def to_retire(pods: list[dict], keep: int, multinode: bool) -> list[dict]:
    """Which running pods of one pool leave it so that `keep` replicas stay: whole LWS groups from the
    highest index (the ones LWS deletes when scaled down), else the surplus, not-ready ones first."""
    pods = [p for p in pods if _live(p)]
    if multinode:
        return [p for p in pods if int(labels(p).get(GROUP_INDEX, "0")) >= keep]
    ranked = sorted(pods, key=lambda p: (_ready(p), meta(p)["name"]))
    return ranked[:max(0, len(pods) - keep)]


def _retire(m: Migration, op: Op, ctx: Context) -> None:
    """Take pods out of the side's pool by removing a pool-selector label: the gateway sends them no new
    request while those in flight finish. Marked with the time, so the drain counts from then."""
    plan = m.side(op.side)
    for server in plan.servers:
        selector = server_pod_labels(plan, server)
        pods = ctx.cluster.list("v1", "Pod", m.namespace, ",".join(f"{k}={v}" for k, v in selector.items()))
        gone = to_retire(pods, op.replicas, server.multinode is not None)
        key = next(iter(selector))
        released = _workload_releasing(gone, key, m.namespace, ctx)
        stay = [meta(p)["name"] for p in pods if _live(p) and p not in gone]
        if gone and stay:    # a scale-down deletes the lowest cost first: never these, whatever else it finds
            ctx.cluster.run("kubectl", ctx.target.kubectl(
                "annotate", "pod", *stay, "-n", m.namespace, "--overwrite", f"{DELETION_COST}=1000"), None, 60)
        for pod in gone:
            name = meta(pod)["name"]
            ctx.out(f"    pod {name} leaves pool {pool_name(plan, server)} (label {key} removed)")
            ctx.cluster.run("kubectl", ctx.target.kubectl(
                "annotate", "pod", name, "-n", m.namespace, "--overwrite", f"{RETIRED_AT}={time.time():.0f}",
                f"{DELETION_COST}=-1000"), None, 60)
            ctx.cluster.run("kubectl", ctx.target.kubectl(
                "label", "pod", name, "-n", m.namespace, "--overwrite", f"{key}-", f"{RETIRED_LABEL}={_retired(m, plan)}"),
                None, 60)
        if released is not None:
            _scale_now(released, op.replicas, m.namespace, ctx)
        if not gone:
            ctx.out(f"    pool {pool_name(plan, server)} holds {op.replicas} replica(s) or fewer already")


def _controller(obj: dict | None) -> tuple[str, str] | None:
    refs = meta(obj or {}).get("ownerReferences") or meta(obj or {}).get("owner_references") or []
    return next(((r["kind"], r["name"]) for r in refs if r.get("controller")), None)


def _workload_releasing(pods: list[dict], key: str, namespace: str, ctx: Context) -> tuple[str, str] | None:
    """The Deployment (or the LLMInferenceService over it) whose ReplicaSet selects on `key`: removing
    the label makes the ReplicaSet let the pods go and start replacements at once. Those must be scaled
    away before they get Ready and join the pool (a model server takes minutes; kwok, a moment): the
    pods that stay carry the highest deletion cost, so the scale-down takes the replacement. None when
    the pods stay owned (LWS groups): the scale-down after the drain deletes them."""
    owner = _controller(pods[0]) if pods else None
    if owner is None or owner[0] != "ReplicaSet":
        return None
    rs = ctx.cluster.get("apps/v1", "ReplicaSet", owner[1], namespace)
    if key not in (((rs or {}).get("spec") or {}).get("selector") or {}).get("matchLabels", {}):
        return None
    deployment = _controller(rs)
    if deployment is None or deployment[0] != "Deployment":
        return None
    top = _controller(ctx.cluster.get("apps/v1", "Deployment", deployment[1], namespace))
    return top if top is not None and top[0] == "LLMInferenceService" else deployment


def _scale_now(workload: tuple[str, str], replicas: int, namespace: str, ctx: Context) -> None:
    kind, name = workload
    ctx.out(f"    {kind} {name} scaled to {replicas} at once: the replacement its ReplicaSet starts goes before it serves")
    if kind == "Deployment":
        args = ("scale", "deployment", name, f"--replicas={replicas}")
    else:
        args = ("patch", "llminferenceservice", name, "--type=merge", f"--field-manager={FIELD_MANAGER}",
                "-p", json.dumps({"spec": {"replicas": replicas}}))
    ctx.cluster.run("kubectl", ctx.target.kubectl(*args, "-n", namespace), None, 60)


def _retired(m: Migration, plan: Plan) -> str:
    return f"{m.pattern}-{plan.stack}"


def _release(m: Migration, op: Op, ctx: Context) -> None:
    """Delete the side's retired pods once their drain is over (their room goes to the other side); a
    scale-down may have deleted them already."""
    plan = m.side(op.side)
    pods = ctx.cluster.list("v1", "Pod", m.namespace, f"{RETIRED_LABEL}={_retired(m, plan)}")
    pods = [p for p in pods if not (meta(p).get("deletion_timestamp") or meta(p).get("deletionTimestamp"))]
    if not pods:
        ctx.out("    no retired pod left")
        return
    since = min(float(annotations(p).get(RETIRED_AT) or 0) for p in pods)
    left = since + op.seconds - time.time()
    if left > 0:
        _wait(f"drain the retired pods ({left:.0f} s left)", left, ctx)
    names = [meta(p)["name"] for p in pods]
    ctx.out(f"    deleting {', '.join(names)}")
    ctx.cluster.run("kubectl", ctx.target.kubectl("delete", "pod", *names, "-n", m.namespace, "--ignore-not-found",
                                                  "--wait=false"), None, 120)


def _relabel_steps(m: Migration, op: Op, ctx: Context) -> list[st.Step]:
    """`kubectl label` of the front routes, and of the kept Gateway when the deployment made it (with
    what the op's helm releases hold); a label set to None is removed, from the front routes only
    (nothing else carries it)."""
    def step(title: str, objects: list[dict], lbl: dict) -> st.Step:
        args = [f"{k}-" if v is None else f"{k}={v}" for k, v in lbl.items()]
        return st.Step(title, tool="kubectl", objects=tuple(objects),
                       args=ctx.target.kubectl("label", "--overwrite", *args, "-f", "-"))

    steps = [step(op.title, list(op.objects), dict(op.labels))]
    if ctx.cluster is not None:
        held = [stub(o) for o in flows.find_labelled(ctx.cluster, f"lightrail.dev/pattern={m.pattern}")
                if ((annotations(o).get(HELM_RELEASE) in op.releases and meta(o).get("namespace")
                     == m.namespace) or kept_gateway(m, o)) and not generated(o)]
        if held:
            names = ", ".join(sorted({f"{o['kind']}/{meta(o)['name']}" for o in held}))
            steps.append(step(f"{op.title}: {names}", held, {k: v for k, v in op.labels.items() if v is not None}))
    return steps


def _indent(out: Out) -> Out:
    return lambda line: out(f"    {line}")


def _await_endpoints(m: Migration, op: Op, ctx: Context) -> None:
    """Every target replica ready before it is verified or gets weight. A stack's own readiness can
    come sooner: KServe's is its Deployment's Available condition, true while a replica still starts;
    the holds' readiness guard would then trip on a target that was only slow."""
    end = ctx.clock() + m.options.timeout
    with ctx.progress("target endpoints") as update:
        while (counts := _ready_endpoints(m, ctx, op.replicas))[0] < counts[1]:
            if ctx.clock() >= end:
                raise LightrailError(f"only {counts[0]} of {counts[1]} target endpoint(s) ready after "
                                     f"{m.options.timeout:.0f} s", fix="see why with `kubectl get pods` and "
                                     f"`kubectl describe pod` in namespace {m.namespace}")
            update(f"{counts[0]}/{counts[1]} ready, {end - ctx.clock():.0f} s left")
            ctx.sleep(1.0)
    ctx.out(f"    target endpoints ready: {counts[0]}/{counts[1]}")


def _wait(title: str, seconds: float, ctx: Context) -> None:
    ctx.out(f"- {title}")
    end = ctx.clock() + seconds
    with ctx.progress(title) as update:
        while (left := end - ctx.clock()) > 0:
            update(f"{left:.0f} s left")
            ctx.sleep(min(left, 1.0))


# --- probes through the Gateway ----------------------------------------------------------------


def _reachable(m: Migration, ctx: Context) -> None:
    """Any HTTP answer from --url (a 404 too), and Istio's counters at --metrics-url, before anything
    changes: a wrong address or an untrusted certificate is refused now, not after the target was deployed."""
    try:
        httpx.get(f"{ctx.url}/", timeout=30, verify=ctx.trust)
    except httpx.HTTPError as err:
        raise LightrailError(f"the Gateway does not answer at --url={smoke.mask_url(ctx.url)}: {smoke.describe(err)}; "
                             "nothing was changed") from None
    try:
        _client_counts(m, ctx)
    except LightrailError as err:
        raise LightrailError(f"{err.message}; nothing was changed", fix=err.fix) from None


def _client_counts(m: Migration, ctx: Context) -> dict[str, gatewaymetrics.Counts] | None:
    """Requests per side the Gateway has counted (--metrics-url), or None without it."""
    if not ctx.metrics_url:
        return None
    try:
        resp = httpx.get(ctx.metrics_url, timeout=10, verify=ctx.trust)
        resp.raise_for_status()
    except httpx.HTTPError as err:
        raise LightrailError(f"the gateway metrics do not answer at --metrics-url={smoke.mask_url(ctx.metrics_url)}: "
                             f"{smoke.describe(err)}", fix="is the port-forward to the gateway proxy still running?") \
            from None
    pools = {side: [pool_name(m.side(side), s) for s in m.side(side).servers] for side in ("source", "target")}
    return gatewaymetrics.per_side(resp.text, m.namespace, pools)


def _client(ctx: Context, side: str, prefix: str = "") -> httpx.Client:
    """Requests through the Gateway: a side's probe rule, or (side "clients") the client rules under `prefix`."""
    return httpx.Client(base_url=ctx.url + prefix, headers={} if side == "clients" else {PROBE_HEADER: side},
                        timeout=60, verify=ctx.trust)


def _probe(m: Migration, side: str, ctx: Context, k: int = 0) -> guards.Sample:
    """One completion through the side's probe rule, to its k-th model (in turn: multimodel)."""
    plan = m.side(side)
    server = plan.servers[k % len(plan.servers)]
    with _client(ctx, side) as client:
        try:
            check = smoke.completion(client, plan.client_model(server))
        except httpx.HTTPError as err:
            return guards.Sample(False, 0.0, f"{type(err).__name__}: {err}")
    return guards.Sample(check.ok, check.latency_ms / 1000, "" if check.ok else f"{check.got}")


def _baseline(m: Migration, ctx: Context, n: int = 5) -> float:
    samples = [_probe(m, "source", ctx, k) for k in range(n)]
    ok = [s.seconds for s in samples if s.ok]
    if not ok:
        raise LightrailError(f"the source does not answer through its probe rule: {samples[-1].detail}",
                             fix=f"check --url={smoke.mask_url(ctx.url)} reaches Gateway {m.gateway[0]}/{m.gateway[1]}")
    ctx.out(f"    source baseline: median {statistics.median(ok) * 1000:.0f} ms over {len(ok)} probe(s)")
    return statistics.median(ok)


def _verify(m: Migration, side: str, ctx: Context) -> None:
    """Completion, chat and streaming through the side's probe rule, each from the right model; or
    ("clients") as clients call each model, which takes the target once the source is gone: what
    the probe rules cannot see (the client rules, the router that fills their model header)."""
    ctx.out(f"- verify the {side} through " + ("the client rules" if side == "clients" else "its probe rule"))
    plan = m.target if side == "clients" else m.side(side)
    for server, source in zip(plan.servers, m.source.servers):
        model = plan.client_model(server)
        base = client_prefix(list(m.rules[source.name])) if side == "clients" else ""
        with _client(ctx, side, base) as client:
            for probe in (smoke.completion, smoke.chat, smoke.streaming):
                check = probe(client, model)
                deadline = ctx.clock() + VERIFY_GRACE
                while not check.ok and "HTTP 503" in check.got and ctx.clock() < deadline:
                    ctx.sleep(1)      # no ready endpoint yet, as the gateway sees it: it learns new pods late
                    check = probe(client, model)
                ctx.out(f"    {'ok  ' if check.ok else 'FAIL'}  {check.name}  {check.latency_ms:.0f} ms  {check.got}")
                if not check.ok:
                    who = "clients' requests" if side == "clients" else f"the {side}"
                    raise LightrailError(f"{who} failed {check.name}: expected {check.expected}, got {check.got}")


def _warm(m: Migration, ctx: Context) -> None:
    """Requests sharing long prefixes, so the target's prefix caches hold what clients send most."""
    ctx.out(f"- warm the target's prefix cache ({WARM_PROMPTS} requests through its probe rule)")
    prefix = "You are a helpful assistant. Answer briefly and precisely. " * 40
    with _client(ctx, "target") as client:
        for server in m.target.servers:
            for i in range(WARM_PROMPTS):
                body = {"model": m.target.client_model(server), "prompt": f"{prefix}\nQuestion {i}:", "max_tokens": 1}
                resp = client.post("/v1/completions", json=body)
                if resp.status_code != 200:
                    raise LightrailError(f"warming the target failed: HTTP {resp.status_code}")


def _ready_endpoints(m: Migration, ctx: Context, replicas: int = 0) -> tuple[int, int]:
    """Ready target pods in its pools, and how many there should be (`replicas` per model; 0: the plan's)."""
    ready = desired = 0
    for server in m.target.servers:
        sel = ",".join(f"{k}={v}" for k, v in target_selector(m, server).items())
        pods = ctx.cluster.list("v1", "Pod", m.namespace, sel)
        ready += sum(1 for p in pods if _live(p) and _ready(p))
        desired += replicas or server.replicas
    return ready, desired


def _hold(m: Migration, op: Op, ctx: Context, state: State | None) -> None:
    """Keep the weight for op.seconds while probing the target; trip on the first bad verdict."""
    ctx.out(f"- {op.title}")
    samples: list[guards.Sample] = []
    start = ctx.clock()
    limits = guards.Limits(latency_margin=m.options.latency_margin)
    limit = f" (limit {guards.latency_limit(ctx.baseline, limits) * 1000:.0f} ms)" if ctx.baseline else ""

    watch = gatewaymetrics.HoldWatch()

    def summary(ready: int, desired: int, clients: dict | None) -> str:
        mid = guards.median(samples)
        seen = f", clients: source {clients['source']}, target {clients['target']}" if clients else ""
        return (f"target {op.weight}%, {ctx.clock() - start:.0f}/{op.seconds:.0f} s, probes {len(samples)} ok, median "
                f"{(mid or 0) * 1000:.0f} ms{limit}, ready {ready}/{desired}{seen}")

    with ctx.progress(f"{state.phase if state else 'hold'}") as update:
        while True:
            samples.append(_probe(m, "target", ctx, len(samples)))
            ready, desired = _ready_endpoints(m, ctx, op.replicas)
            if ctx.metrics_url:
                watch.read(lambda: _client_counts(m, ctx))
            clients = watch.clients
            reason = guards.verdict(samples, ctx.baseline, ready, desired, limits, clients and clients["target"],
                                    watch.unread, watch.error)
            if reason:
                raise GuardTripped(reason)
            update(summary(ready, desired, clients))
            if ctx.clock() - start >= op.seconds and not watch.unread:
                ctx.out(f"    {summary(ready, desired, clients)}")
                return
            ctx.sleep(PROBE_INTERVAL)


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
        flows.deploy(_side_plan(m, op), ctx.target, ctx.cluster, dry_run=True, out=_indent(ctx.out), token=ctx.token,
                     timeout=m.options.timeout, charts=ctx.charts, dry=dry)
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
