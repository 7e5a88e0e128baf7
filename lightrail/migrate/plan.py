"""A migration as data: ordered phases, each with the operations that do it and that undo it.

Pure: built from the two plans and the source's client rules (read from its live route before
anything changes). Every operation is idempotent - applying a route, deploying a plan, removing
a side, relabelling, retiring pods from a pool and releasing them (--no-surge) - so a phase
interrupted anywhere is finished by running it again
(`--resume`) and undone by running its backward operations (`--rollback`), newest phase first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Mapping

from lightrail.errors import LightrailError
from lightrail.migrate.routes import front_route_object, pool_name
from lightrail.ops.objects import MIGRATION_LABEL, stub
from lightrail.plan import KSERVE_GATEWAY, Plan, build_plan

DEFAULT_STEPS = (1, 5, 10, 25, 50, 75, 100)
WARM_LIMIT = 256 * 1024   # characters of --warm-prompts as the state ConfigMap stores them (JSON; 1 MiB at most)


@dataclass(frozen=True)
class Options:
    steps: tuple[int, ...] = DEFAULT_STEPS   # the target's share (%) after each shift
    hold: float = 60.0        # seconds each weight is held and guarded
    settle: float = 5.0       # seconds a gateway needs to apply a route change (KServe's e2e allows ~5 s)
    drain: float = 30.0       # seconds for the source's in-flight requests to finish after it leaves the route
    surge: bool = True        # both sides run at once (needs capacity for the target beside the source);
                              # False (--no-surge): swap one replica (moe: one LWS group) at a time
    keep_pvcs: bool = True
    timeout: float = 900.0    # seconds for a deploy to become ready
    latency_margin: float = 1.0   # the target's probe median may exceed the source's by this (or 3x it)
    warm_prompts: tuple[str, ...] = ()   # caching: what the target's prefix caches are warmed with (none: generic)

    def __post_init__(self):
        steps = self.steps
        if not steps or list(steps) != sorted(set(steps)) or steps[0] < 1 or steps[-1] != 100:
            raise LightrailError(f"--steps must rise strictly from 1..99 to 100 (percent for the target), got "
                                 f"{','.join(map(str, steps)) or 'nothing'}")
        for name in ("hold", "settle", "drain", "timeout", "latency_margin"):
            if getattr(self, name) < 0:
                raise LightrailError(f"--{name.replace('_', '-')} must not be negative")


@dataclass(frozen=True)
class Op:
    action: str          # apply | delete | deploy | remove | relabel | settle | verify | warm | hold | drain
                         # | retire | release
    title: str
    objects: tuple[dict, ...] = ()
    side: str = ""       # deploy/remove/verify/warm: "source" or "target"; verify: "clients" (the client path)
    front: bool = True   # deploy: served through the front route (False: as the stack makes it alone)
    weight: int = 0      # hold: the target's share being held
    replicas: int = 0    # deploy: replicas per model (0: the plan's); retire: replicas left in the pool;
                         # hold: the target's replicas that must be ready
    seconds: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)   # relabel: the labels to set
    releases: tuple[str, ...] = ()   # relabel: also the objects of these helm releases (gateway_releases)


@dataclass(frozen=True)
class Phase:
    name: str
    forward: tuple[Op, ...]
    backward: tuple[Op, ...]


@dataclass(frozen=True)
class Migration:
    source: Plan               # the deployment as it runs now
    target: Plan               # the other stack, served through the front route on the same Gateway
    gateway: tuple[str, str]   # (namespace, name): never replaced
    rules: Mapping[str, tuple[dict, ...]]        # per model server: the client rules the front route keeps
    parent_refs: Mapping[str, tuple[dict, ...]]  # per model server: where the source route attaches
    source_fronted: bool       # the source is already served through a front route (a migration back)
    options: Options
    phases: tuple[Phase, ...] = ()

    @property
    def namespace(self) -> str:
        return self.source.namespace

    @property
    def pattern(self) -> str:
        return self.source.pattern.name

    def side(self, name: str) -> Plan:
        return self.source if name == "source" else self.target

    def index(self, phase: str) -> int:
        return [p.name for p in self.phases].index(phase)


def fronted(plan: Plan, gateway: tuple[str, str]) -> Plan:
    """The same deployment served through Lightrail's front route on `gateway`."""
    return build_plan(replace(plan.request, front=f"{gateway[0]}/{gateway[1]}"))


def target_plan(source: Plan, stack: str, gateway: tuple[str, str]) -> Plan:
    return fronted(build_plan(replace(source.request, stack=stack, front="")), gateway)


def plan_migration(source: Plan, to: str, gateway: tuple[str, str], rules: Mapping[str, list[dict]],
                   parent_refs: Mapping[str, list[dict]], options: Options = Options(),
                   source_fronted: bool = False) -> Migration:
    """Every phase of moving `source` to stack `to`, or LightrailError when it cannot be done."""
    check_migratable(source, to, options.surge, bool(options.warm_prompts))
    missing = [s.name for s in source.servers if s.name not in rules]
    if missing:
        raise LightrailError(f"no client rules known for {', '.join(missing)}")
    m = Migration(source=source, target=target_plan(source, to, gateway), gateway=gateway,
                  rules={k: tuple(v) for k, v in rules.items()},
                  parent_refs={k: tuple(v) for k, v in parent_refs.items()},
                  source_fronted=source_fronted, options=options)
    return replace(m, phases=tuple(_phases(m)))


def warm_prompts(text: str, path: str) -> tuple[str, ...]:
    """The prompts of a --warm-prompts file: JSON Lines of {"prompt": "..."}, as `vllm bench serve
    --dataset-name=custom` reads them, so a file of the clients' own prompts serves both."""
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line).get("prompt")
        except (ValueError, AttributeError):
            prompt = None
        if not isinstance(prompt, str) or not prompt.strip():
            raise LightrailError(f"--warm-prompts {path} line {n}: expected a JSON object with a non-empty \"prompt\" "
                                 "string", fix='one {"prompt": "..."} per line (JSON Lines)')
        prompts.append(prompt)
    if not prompts:
        raise LightrailError(f"--warm-prompts {path} holds no prompt", fix='one {"prompt": "..."} per line')
    stored = len(json.dumps(prompts))     # as the state holds them: non-ASCII text takes 6 characters a letter
    if stored > WARM_LIMIT:
        raise LightrailError(f"--warm-prompts {path}: {stored} characters of prompts as stored, more than "
                             f"{WARM_LIMIT} (they are kept in the migration's state ConfigMap)",
                             fix="keep the prefixes clients share (system prompts, few-shot examples), once each")
    return tuple(prompts)


def warms(source: Plan) -> bool:
    """Prefix-cache-aware picking (caching): the target's caches are warmed before it gets weight."""
    return "prefix-cache-scorer" in source.scorers


def check_migratable(source: Plan, to: str, surge: bool = True, warm: bool = False) -> None:
    """What can be refused from the request alone, before the cluster is read."""
    if warm and not warms(source):
        raise LightrailError(f"--warm-prompts: pattern {source.pattern.name} has no prefix-cache-aware picking, "
                             "so nothing is warmed", fix="drop --warm-prompts (it applies to caching)")
    if not surge and source.servers[0].replicas < 2:
        raise LightrailError(f"--no-surge swaps one replica at a time, and {source.pattern.name} runs "
                             f"{source.servers[0].replicas}: while it is swapped, nothing would serve",
                             fix="free room for the target beside the source and migrate without --no-surge, or "
                                 "deploy with --replicas=2 or more first")
    if to == source.stack:
        raise LightrailError(f"pattern {source.pattern.name} already runs on the {to} stack; valid --to: "
                             f"{'kserve' if to == 'llmd' else 'llmd'}")


def front_routes(m: Migration, weight: int, probes: tuple[str, ...] = ("source", "target"),
                 labels: Mapping[str, str] | None = None) -> tuple[dict, ...]:
    """Each model's front route with the target at `weight` percent (the source at the rest)."""
    out = []
    for src, tgt in zip(m.source.servers, m.target.servers):
        pools = {"source": pool_name(m.source, src), "target": pool_name(m.target, tgt)}
        weights = {pools["source"]: 100 - weight, pools["target"]: weight}
        out.append(front_route_object(m.source, src, list(m.parent_refs[src.name]), list(m.rules[src.name]),
                                      weights, {p: pools[p] for p in probes}, dict(labels or front_labels(m))))
    return tuple(out)


def front_labels(m: Migration) -> dict[str, str]:
    """The front routes belong to the source until the handover, then to the target."""
    return {**m.source.labels, MIGRATION_LABEL: f"{m.source.stack}-to-{m.target.stack}"}


def replicas(m: Migration) -> int:
    """Replicas per model (moe: LWS groups) the source runs, and the target ends with."""
    return m.source.servers[0].replicas


def weights(m: Migration) -> tuple[int, ...]:
    """The target's share after each shift: the steps, or with --no-surge its share of the replicas."""
    if m.options.surge:
        return m.options.steps
    r = replicas(m)
    return tuple(round(100 * k / r) for k in range(1, r)) + (100,)


def _phases(m: Migration) -> list[Phase]:
    o = m.options
    settle = Op("settle", f"let the gateway apply the route change ({o.settle:.0f} s)", seconds=o.settle)
    phases = []
    before = front_routes(m, 0, ("source",)) if m.source_fronted else None
    # a migration back: the routes were the source deployment's, not a migration's (`kubectl label`: the
    # label may be held by the handover's undo, which an apply leaves in place)
    unmark = Op("relabel", f"the front route(s) belong to the {m.source.stack} deployment again, no migration's",
                tuple(stub(r) for r in front_routes(m, 0)), labels={**_ours(m.source.labels), MIGRATION_LABEL: None})
    phases.append(Phase(
        "front",
        (Op("apply", "own the front route(s): client rules and a probe rule to the source's pool",
            front_routes(m, 0, ("source",))), settle),
        (Op("apply", "front route(s) back as they were", before), unmark, settle) if before else
        (Op("delete", "delete the front route(s)", tuple(stub(r) for r in front_routes(m, 0))), settle)))
    if not m.source_fronted:
        phases.append(Phase(
            "retire-source-route",
            (Op("deploy", f"serve the source ({m.source.stack}) through the front route: its own route goes",
                side="source", front=True), settle),
            (Op("deploy", f"restore the source's own route ({m.source.stack})", side="source", front=False), settle)))
    if o.surge:
        phases.append(Phase(
            "deploy-target",
            (_probe_target(m), Op("deploy", f"deploy the target ({m.target.stack}) beside the source, attached to "
                                  "the front route", side="target"), settle),
            (Op("remove", f"remove the target ({m.target.stack})", side="target"), _unprobe_target(m))))
        phases.append(_verify_phase(m))
        phases += _shifts(m, [(w, 0) for w in o.steps], settle)
    else:
        r = replicas(m)
        for k in range(1, r):
            phases.append(_swap(m, k, settle))
            if k == 1:
                phases.append(_verify_phase(m))
            phases += _shifts(m, [(weights(m)[k - 1], k)], settle, previous=weights(m)[k - 2] if k > 1 else 0)
        phases += _shifts(m, [(100, r - 1)], settle, previous=weights(m)[-2])
    phases.append(Phase(
        "drain",
        (Op("apply", "the source leaves the front route (its probe rule too)", front_routes(m, 100, ("target",))),
         settle, Op("drain", f"let the source's in-flight requests finish ({o.drain:.0f} s)", seconds=o.drain)),
        (Op("apply", "the source's probe rule back", front_routes(m, 100)), settle)))
    last = 0 if o.surge else 1      # --no-surge: the source's last replica comes back, as it was
    phases.append(Phase(
        "remove-source",
        (Op("remove", f"remove the source ({m.source.stack}); the Gateway stays", side="source"),
         Op("verify", "verify clients are served: every model through the client rules (no probe header), as "
            "clients call it", side="clients")),
        (Op("deploy", f"deploy the source ({m.source.stack}) again behind the front route"
            + (" (1 replica)" if last else ""), side="source", replicas=last),
         Op("apply", "the source's probe rule back", front_routes(m, 100)), settle,
         Op("verify", "verify the source through its probe rule", side="source"))))
    if not o.surge:
        r = replicas(m)
        phases.append(Phase(
            "scale-target",
            (Op("deploy", f"scale the target ({m.target.stack}) to {r} replicas in the room the source left",
                side="target"), settle),
            _shrink(m, "target", r - 1, settle)))
    # the Gateway an llmd deployment once made goes with the deployment, either way (a kserve source's own
    # HTTPS Gateway, of --tls-secret, is relabelled too: the executor finds it), and so does the
    # body-based router acting on the Gateway, KServe's shared one too
    releases = gateway_releases(m)
    gw = " and the Gateway" if f"{m.pattern}-infra" in releases else " and the Gateway if the deployment made it"
    gw += " and its body-based router" if m.source.body_based_routing else ""
    phases.append(Phase(
        "handover",
        (Op("relabel", f"the front route(s){gw} now belong to the "
            f"{m.target.stack} deployment", tuple(stub(r) for r in front_routes(m, 100)),
            labels={**_ours(m.target.labels), MIGRATION_LABEL: None}, releases=releases),),
        (Op("relabel", f"the front route(s){gw} back to the "
            f"{m.source.stack} deployment", tuple(stub(r) for r in front_routes(m, 100)),
            labels=_ours(front_labels(m)), releases=releases),)))
    return phases


def gateway_releases(m: Migration) -> tuple[str, ...]:
    """What goes with the kept Gateway: the helm release of the Gateway an llmd deployment made
    (`<pattern>-infra`; none on KServe's shared gateway) and, for a body-routed pattern, the
    body-based router acting on it (`<pattern>-bbr`: llmd's helm release, or the kserve stack's
    kustomize unit with its EnvoyFilter in KServe's namespace), which fills the model header the
    front routes match. Neither side's removal touches them; the handover gives them to the target."""
    router = (f"{m.pattern}-bbr",) if m.source.body_based_routing else ()
    if tuple(m.gateway) == KSERVE_GATEWAY or (m.source.stack == "kserve" and not m.source_fronted):
        return router
    return (f"{m.pattern}-infra",) + router


def _verify_phase(m: Migration) -> Phase:
    verify = [Op("verify", "verify the target through its probe rule (no client traffic)", side="target")]
    if warms(m.source):
        given = len(m.options.warm_prompts)
        verify.append(Op("warm", "warm the target's prefix cache through its probe rule"
                         + (f" with the {given} prompt(s) of --warm-prompts" if given else ""), side="target"))
    return Phase("verify-target", tuple(verify), ())


def _shifts(m: Migration, steps: list[tuple[int, int]], settle: Op, previous: int = 0) -> list[Phase]:
    """One phase per weight: apply, settle, hold guarded (`replicas`: the target's, 0 = all of them)."""
    out = []
    for w, ready in steps:
        out.append(Phase(
            f"shift-{w}",
            (Op("apply", f"weights: target {w}%, source {100 - w}%", front_routes(m, w)), settle,
             Op("hold", f"hold {w}% for {m.options.hold:.0f} s, guarded", weight=w, seconds=m.options.hold,
                replicas=ready)),
            (Op("apply", f"weights back: target {previous}%, source {100 - previous}%", front_routes(m, previous)),
             settle)))
        previous = w
    return out


def _shrink(m: Migration, side: str, keep: int, settle: Op) -> tuple[Op, ...]:
    """Down to `keep` replicas without breaking a request: the extra pods leave the pool and drain, then
    the workload scales down (deleting them, or the replacement a ReplicaSet made when they left its
    selector), then whatever retired pod is left goes."""
    stack = m.side(side).stack
    drain = m.options.drain
    return (Op("retire", f"take the {side}'s ({stack}) pods beyond {keep} replica(s) out of its pool", side=side,
               replicas=keep),
            replace(settle, title=f"let the gateway see the pool change ({settle.seconds:.0f} s)"),
            Op("drain", f"let the retired pods' requests in flight finish ({drain:.0f} s)", seconds=drain),
            Op("deploy", f"scale the {side} ({stack}) to {keep} replica(s)", side=side, front=True, replicas=keep),
            Op("release", f"delete the {side}'s retired pods still there (drained {drain:.0f} s)", side=side,
               seconds=drain))


def _swap(m: Migration, k: int, settle: Op) -> Phase:
    """--no-surge: one source replica's room goes to the target's k-th replica."""
    r = replicas(m)
    src, tgt = m.source.stack, m.target.stack
    grow_source = Op("deploy", f"scale the source ({src}) back to {r - k + 1} replica(s)", side="source", front=True,
                     replicas=r - k + 1)
    release_source = Op("release", f"delete the retired source pods once drained ({m.options.drain:.0f} s)",
                        side="source", seconds=m.options.drain)
    if k == 1:
        undo_target: tuple[Op, ...] = (Op("remove", f"remove the target ({tgt})", side="target"), _unprobe_target(m))
    else:
        undo_target = _shrink(m, "target", k - 1, settle)
    return Phase(
        f"swap-{k}",
        # the first swap scales a kserve source while no route names the missing target pool, also when it
        # runs again on --resume after its probe rule was added
        (*((_unprobe_target(m),) if k == 1 else ()), *_shrink(m, "source", r - k, settle),
         *((_probe_target(m),) if k == 1 else ()),
         Op("deploy", f"deploy the target ({tgt}) with {k} replica(s) in the room the source left, attached to the "
            "front route", side="target", replicas=k), settle),
        (*undo_target, release_source, grow_source))


def _probe_target(m: Migration) -> Op:
    """The target's probe rule joins the front route(s) just before the target is deployed: a kserve
    target waits for the gateway to accept its pool, which a route must name; and not before, since a
    route naming a pool that does not exist yet is not Ready to KServe (ResolvedRefs: BackendNotFound),
    which a kserve source, served through that route from retire-source-route on, waits for."""
    return Op("apply", "add the target's probe rule to the front route(s)", front_routes(m, 0))


def _unprobe_target(m: Migration) -> Op:
    return Op("apply", "the front route(s) without the target's probe rule", front_routes(m, 0, ("source",)))


def _ours(lbl: Mapping[str, str | None]) -> dict[str, str | None]:
    """Lightrail's own labels: a relabel leaves app.kubernetes.io/managed-by to Helm on what Helm owns."""
    return {k: v for k, v in lbl.items() if k.startswith("lightrail.dev/")}


def describe(m: Migration) -> list[str]:
    """The whole plan in words: phases in order, what each does, and how each is undone."""
    lines = [f"migrate {m.pattern} ({m.source.accel}) from {m.source.stack} to {m.target.stack} in namespace "
             f"{m.namespace}, behind Gateway {m.gateway[0]}/{m.gateway[1]} (kept)",
             f"weights (target %): {' -> '.join(str(w) for w in weights(m))}"
             + ("" if m.options.surge else f" (--no-surge: {replicas(m)} replicas swapped one at a time)")
             + f"; hold {m.options.hold:.0f} s each; "
             f"settle {m.options.settle:.0f} s after each route change; drain {m.options.drain:.0f} s"]
    for i, phase in enumerate(m.phases, 1):
        lines.append(f"phase {i}/{len(m.phases)} {phase.name}:")
        lines.extend(f"  - {op.title}" for op in phase.forward)
        lines.extend(f"  undo: {op.title}" for op in phase.backward)
    lines.append("guards during every hold: a failed target probe, target latency above "
                 f"max(3 x the source's, +{m.options.latency_margin:g} s), fewer ready target endpoints than desired, "
                 "a client request answered 5xx from the target (with --metrics-url) -> weights back to the "
                 "last good step, then stop (state kept: --resume or --rollback)")
    return lines
