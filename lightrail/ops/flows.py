"""The commands as flows: say where, observe, decide (pure modules), execute, report.

Each flow takes the target and a cluster object (`KubeCluster`, a fake in tests, or None for
a dry run with no reachable cluster), prints through `out`, and raises LightrailError on
failure. A KeyboardInterrupt (Ctrl-C, or SIGTERM via `sigterm_as_interrupt`) is reported —
what was applied, what may be half-applied, how to undo it — and then re-raised.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from lightrail import tools
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.ops import checks as ck
from lightrail.ops import kind as kindops
from lightrail.ops import kwok as kwokops
from lightrail.ops import steps as st
from lightrail.ops import teardown as td
from lightrail.ops.cluster import KubeCluster, kubeconfig_contexts, kubeconfig_paths
from lightrail.ops.deploy import DeployPlan, Desired, Live, plan_deploy, plan_rollback
from lightrail.ops.desired import desired_state
from lightrail.ops.executor import DryRun, Journal, Live as LiveExecutor, run_steps
from lightrail.ops.objects import HELM_RELEASE, MIGRATION_LABEL, annotations, generated, key, meta
from lightrail.ops.prereqs import Prereqs, plan_prereqs
from lightrail.ops.secrets import Token
from lightrail.ops.status import KINDS, Row, aggregate
from lightrail.ops.steps import show
from lightrail.ops.target import Target, check_namespace, resolve
from lightrail.plan import HF_TOKEN_SECRET, KSERVE_GATEWAY, Plan
from lightrail.progress import Progress, no_progress
from lightrail.settings import TOOLS_BIN
from lightrail.smoke.discovery import GATEWAY_NAME_LABEL, gateway_service, gateway_url, kserve_endpoint

Out = Callable[[str], None]
NO_CONTEXT = "no kube context"   # Target.source when the kubeconfig gave none


def connect(kube_context: str, namespace: str, dry_run: bool, out: Out, reads_only: bool = False,
            progress: Progress = no_progress) -> tuple[Target, KubeCluster | None]:
    """Resolve the target and reach its cluster (`choose_target`, then `reach`)."""
    target = choose_target(kube_context, namespace, dry_run, out, reads_only)
    return target, reach(target, dry_run, out, reads_only, progress)


def choose_target(kube_context: str, namespace: str, dry_run: bool, out: Out, reads_only: bool = False) -> Target:
    """The context and namespace from the flags and the kubeconfig, without a request to any cluster.
    A dry run or a task that only reads goes on without a context (its commands then name none)."""
    check_namespace(namespace)
    contexts, current = kubeconfig_contexts()
    try:
        return resolve(kube_context or None, contexts, current, namespace)
    except LightrailError as err:
        if not (dry_run or reads_only) or (kube_context and contexts):
            raise LightrailError(err.message + _kubeconfig_hint(contexts), fix=err.fix) from None
        out(f"note: {err}" + ("; a dry run plans against an empty cluster and names no context in its commands"
                               if dry_run else ""))
        return Target(kube_context or None, namespace, NO_CONTEXT)


def reach(target: Target, dry_run: bool, out: Out, reads_only: bool = False,
          progress: Progress = no_progress) -> KubeCluster | None:
    """The target's cluster, or None for a dry run (planning against nothing) or a task that only reads
    (doctor reports the cluster as a failed check)."""
    if target.source == NO_CONTEXT:
        return None
    try:
        with progress(f"reaching the cluster of context {target.context}"):   # an unanswering server takes a while
            cluster = KubeCluster(target.context)
            cluster.version()
    except LightrailError as err:
        if not (dry_run or reads_only):
            raise
        out(f"note: {err}" + ("; a dry run plans against an empty cluster" if dry_run else ""))
        return None
    return cluster


def _kubeconfig_hint(contexts: list[str]) -> str:
    """Which kubeconfig files were looked at, when none gave a context."""
    if contexts:
        return ""
    files = ", ".join(f"{p}{'' if p.exists() else ' (no such file)'}" for p in kubeconfig_paths())
    return f" [kubeconfig: {files}]"


# ---------------------------------------------------------------------------------------------
# Observations


def tool_versions() -> dict[str, str | None]:
    """The installed pinned tools' versions (None when missing or broken)."""
    probes = {"helm": ("version", "--template", "{{.Version}}"), "helmfile": ("version", "--output", "short"),
              "kubectl": ("version", "--client", "--output", "json")}
    found: dict[str, str | None] = {}
    for tool, args in probes.items():
        try:
            text = tools.run(tool, *args, timeout=30, env={"HELMFILE_UPGRADE_NOTICE_DISABLED": "1"}).stdout.strip()
        except LightrailError:
            found[tool] = None
            continue
        found[tool] = json.loads(text)["clientVersion"]["gitVersion"] if tool == "kubectl" else text.splitlines()[0]
    return found


def observe_facts(cluster, target: Target) -> ck.Facts:
    if cluster is None:
        return ck.Facts(target.context, error="not reachable")
    try:
        version = cluster.version()
    except LightrailError as err:
        return ck.Facts(target.context, error=str(err))
    return ck.Facts(
        context=target.context, server_version=version,
        crds=cluster.list("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        gateway_classes=cluster.list("gateway.networking.k8s.io/v1", "GatewayClass"),
        gateways=cluster.list("gateway.networking.k8s.io/v1", "Gateway", KSERVE_GATEWAY[0]),
        nodes=cluster.list("v1", "Node"), pods=cluster.list("v1", "Pod"),
        secrets=[meta(s)["name"] for s in cluster.list("v1", "Secret", target.namespace)] if target.namespace else [],
        claims=cluster.list("v1", "PersistentVolumeClaim", target.namespace) if target.namespace else [],
    )


def observe_live(cluster, plan: Plan, desired: Desired) -> Live:
    if cluster is None:   # a dry run without a cluster: nothing of ours exists, namespaces of others do
        return Live(namespaces={meta(o)["namespace"] for o in desired.objects if meta(o).get("namespace")}
                    - {plan.namespace})
    objects = {}
    for obj in desired.objects:
        found = cluster.get(obj["apiVersion"], obj["kind"], meta(obj)["name"], meta(obj).get("namespace"))
        if found is not None:
            objects[key(obj)] = found
    releases = {r["name"]: r for r in cluster.releases(plan.namespace)} if plan.stack == "llmd" else {}
    in_releases: dict[str, list[dict]] = {}
    if releases:   # what each release holds now: an object it no longer renders is a change too
        for obj in find_labelled(cluster, td.selector(plan.pattern.name, plan.stack)):
            release = annotations(obj).get(HELM_RELEASE)
            if release in releases and meta(obj).get("namespace") == plan.namespace and not generated(obj):
                in_releases.setdefault(release, []).append(obj)
    namespaces = {meta(n)["name"]: meta(n).get("labels") or {} for n in cluster.list("v1", "Namespace")}
    return Live(namespaces=set(namespaces), objects=objects, namespace_labels=namespaces.get(plan.namespace),
                releases=releases, secret=cluster.get("v1", "Secret", HF_TOKEN_SECRET, plan.namespace),
                in_releases=in_releases)


def find_labelled(cluster, selector: str) -> list[dict]:
    """Every object with these labels, of every listable kind the cluster serves."""
    found = []
    for api_version, kind, namespaced in cluster.kinds():
        if namespaced and kind != "Event":
            found += cluster.list(api_version, kind, None, selector)
    return found


# ---------------------------------------------------------------------------------------------
# doctor


def doctor(target: Target, cluster, stack: str, provider: str, plan: Plan | None = None,
           objects: list[dict] | None = None, token_given: bool = False) -> list[ck.Check]:
    facts = observe_facts(cluster, target)
    return ck.tool_checks(tool_versions()) + ck.cluster_checks(facts, stack, provider, plan, objects, token_given)


def check_table(checks: list[ck.Check]) -> list[str]:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}" + (f"\n        fix: {c.fix}" if c.fix and c.status != ck.OK else ""))
    return lines


# ---------------------------------------------------------------------------------------------
# deploy


def deploy(plan: Plan, target: Target, cluster, *, dry_run: bool, out: Out, token: Token | None = None,
           wait: bool = True, timeout: float = 900, smoke: Callable[[], None] | None = None,
           charts: Path | None = None, dry: DryRun | None = None, progress: Progress = no_progress,
           desired: Desired | None = None, checked: bool = False) -> DeployPlan:
    """`dry`: the dry run of a larger command this is part of (numbering continues, it sums up).
    `desired`: already rendered (tasks render before they connect); else rendered here from `charts`.
    `checked`: the larger command has run doctor's checks for this plan already (a migration's preflight)."""
    out(f"deploy {plan.pattern.name} ({plan.accel}, {plan.stack}) to {target.banner()}"
        + (" — dry run, nothing is changed" if dry_run else ""))
    desired = desired or desired_state(plan, charts)
    if dry_run and desired.inputs:
        out(f"note: helmfile reads the inputs kept in {desired.inputs} (named by their content; no secret is in "
            f"them); the commands use the pinned tools: put {TOOLS_BIN} first on PATH to run them as printed")
    if cluster is not None and not checked:
        problems = ck.failed(doctor(target, cluster, plan.stack, plan.gateway.provider, plan, desired.objects,
                                    token is not None))
        if problems and dry_run:
            out("note: a real deploy would stop here; the cluster is not ready for it:")
            for line in check_table(problems):
                out(line)
        elif problems:
            raise LightrailError("the cluster is not ready for this deployment:\n"
                                 + "\n".join(check_table(problems)), fix="see `invoke doctor`")
    dp = plan_deploy(plan, desired, observe_live(cluster, plan, desired), target, token, wait, timeout,
                     smoke=smoke is not None)
    _summary(dp, out)
    if not dp.changes_anything:
        out(f"nothing to change: {len(dp.unchanged)} item(s) already as desired")
    executor = (dry or DryRun(out)) if dry_run else LiveExecutor(cluster, out, token, smoke, progress)
    journal = Journal()
    serve = [s for s in dp.steps if s.action != "smoke"]
    try:
        run_steps(serve, executor, journal)
        if wait and not dry_run:
            out(f"endpoint: {ready_endpoint(cluster, plan)}")
        run_steps([s for s in dp.steps if s.action == "smoke"], executor, journal)
    except KeyboardInterrupt:
        report_interrupted(journal, target, out, plan)
        raise
    except LightrailError as err:
        out(f"deploy failed: {err}")
        undone = roll_back(journal, target, executor, out)
        raise LightrailError(f"deploy of {plan.pattern.name} failed; {undone}") from None
    if dry_run and dry is None:
        out(executor.summary(target.context, target.namespace))
    return dp


def _summary(dp: DeployPlan, out: Out) -> None:
    if dp.changed:
        out(f"changes ({sum(1 for c in dp.changed if not c.startswith('  '))}):")
        for line in dp.changed:
            out(f"  {line}")
    if dp.unchanged:
        out(f"unchanged: {len(dp.unchanged)} item(s)")
    for note in dp.notes:
        out(f"note: {note}")


def roll_back(journal: Journal, target: Target, executor, out: Out) -> str:
    """Undo the changes of the steps that started; say what was and was not undone."""
    steps, notes = plan_rollback(journal.started, target)
    for note in notes:
        out(f"note: {note}")
    if not steps:
        return "nothing had been changed"
    out("rolling back what this deploy changed:")
    failures = []
    for step in steps:
        try:
            executor.run(step)
        except (LightrailError, KeyboardInterrupt) as err:
            failures.append(f"{step.title}: {err or 'interrupted'}")
    if failures:
        return "rollback incomplete:\n  " + "\n  ".join(failures)
    return f"rolled back ({len(steps)} step(s))"


def report_interrupted(journal: Journal, target: Target, out: Out, plan: Plan | None = None) -> None:
    """After Ctrl-C: what was applied, what may be half-applied, and the commands that undo it."""
    current = journal.in_progress
    done = journal.started[:journal.finished]
    if not any(s.changes for s in journal.started):
        out("interrupted: nothing had been changed")
        return
    out(f"interrupted on {target.banner()}; the cluster is left as it is:")
    for step in done:
        if step.changes:
            out(f"  applied: {step.title}")
    if current is not None and current.changes:
        out(f"  HALF-APPLIED (interrupted while running): {current.title}")
    steps, notes = plan_rollback(journal.started, target)
    out("to undo, run these (or `invoke teardown"
        + (f" --pattern={plan.pattern.name} --stack={plan.stack}" if plan else "") + f" --namespace={target.namespace}`):")
    for i, step in enumerate(steps, 1):
        out(show(step, i).split("\n", 2)[1])
    for note in notes:
        out(f"  note: {note}")


def ready_endpoint(cluster, plan: Plan) -> str:
    """The endpoint of a deployment just found ready, or why it could not be read (an API server restarting
    for longer than reads retry, a user who may not read Gateways): a failed read of an address is no reason
    to roll back a ready deployment."""
    try:
        return endpoint(cluster, plan)
    except LightrailError as err:
        return f"not read ({err}); `invoke status --namespace={plan.namespace}` shows it"


def endpoint(cluster, plan: Plan) -> str:
    """Where the deployment answers, or how to reach it without an external address."""
    if plan.stack == "llmd":
        gw = cluster.get("gateway.networking.k8s.io/v1", "Gateway", plan.gateway.name,
                         plan.gateway.namespace or plan.namespace)
        url = gateway_url(gw) if gw else None
        name = plan.gateway.name
    else:
        svc = cluster.get(f"serving.kserve.io/{plan.request.kserve_api}", "LLMInferenceService", plan.servers[0].name,
                          plan.namespace)
        url = kserve_endpoint(svc, plan.body_based_routing) if svc else None
        name = KSERVE_GATEWAY[1]
    if url:
        return url
    services = cluster.list("v1", "Service", None, f"{GATEWAY_NAME_LABEL}={name}")
    found = gateway_service(services, name)
    if found:
        ns = next(meta(s)["namespace"] for s in services if meta(s)["name"] == found[0])
        return (f"no external address; `kubectl --context={cluster.context} -n {ns} port-forward svc/{found[0]} "
                f"8080:{found[1]}` then http://127.0.0.1:8080 (`invoke smoke` does this for you)")
    return "no address yet (see `invoke status`)"


# ---------------------------------------------------------------------------------------------
# status, prereqs, teardown


def status(cluster, namespace: str = "", now=None) -> list[Row]:
    from datetime import datetime, timezone

    selector = td.selector()
    objects = [o for api, kind in KINDS for o in cluster.list(api, kind, namespace or None, selector)]
    pods = cluster.list("v1", "Pod", namespace or None, selector)
    states = cluster.list("v1", "ConfigMap", namespace or None, MIGRATION_LABEL)
    return aggregate(objects, pods, now or datetime.now(timezone.utc), states)


def prereqs(target: Target, cluster, *, stack: str, provider: str, istio: bool, dry_run: bool, out: Out,
            local_crds: Path | None = None, dry: DryRun | None = None, progress: Progress = no_progress) -> Prereqs:
    out(f"prereqs for {stack} on {target.banner()}" + (" — dry run, nothing is changed" if dry_run else ""))
    facts = observe_facts(cluster, target)
    if cluster is not None and facts.error:
        raise LightrailError(facts.error)
    result = plan_prereqs(facts, target, stack, provider, istio, local_crds)
    for item in result.present:
        out(f"  present: {item}")
    if not result.steps:
        out("nothing to install")
    journal = Journal()
    executor = (dry or DryRun(out)) if dry_run else LiveExecutor(cluster, out, progress=progress)
    try:
        run_steps(result.steps, executor, journal)
    except KeyboardInterrupt:
        report_interrupted(journal, target, out)
        raise
    for item in result.missing:
        out(f"  missing: {item}")
    if dry_run and dry is None:
        out(executor.summary(target.context, target.namespace))
    return result


def teardown(target: Target, cluster, *, pattern: str | None, stack: str | None, keep_pvcs: bool, dry_run: bool,
             out: Out, timeout: float = 600, poll: float = 2, progress: Progress = no_progress,
             spare: Callable[[dict], bool] | None = None, spare_releases: tuple[str, ...] = (),
             dry: DryRun | None = None) -> td.TeardownPlan:
    """`spare`: labelled objects to leave in place (a migration keeps the Gateway and its front routes),
    and `spare_releases` the helm releases; `dry`: the dry run of a larger command this is part of."""
    what = f"pattern {pattern}" if pattern else "every Lightrail deployment"
    spare = spare or (lambda obj: False)
    out(f"teardown of {what}{f' ({stack})' if stack else ''} on {target.banner()}"
        + (" — dry run, nothing is changed" if dry_run else ""))
    if cluster is None:
        out("nothing found: no cluster to look at")
        return td.TeardownPlan([], [])
    sel = td.selector(pattern, stack)
    found = [o for o in td.select(find_labelled(cluster, sel), target.namespace, pattern, stack) if not spare(o)]
    orphans = [r for r in td.orphan_releases(cluster.releases(target.namespace), pattern, list(load_catalog().patterns))
               if r not in spare_releases] if stack in (None, "llmd") else []
    plan = td.plan_teardown(found, orphans, target, keep_pvcs, timeout)
    if not plan.steps:
        out(f"nothing to remove: no Lightrail objects of {what} in namespace {target.namespace}")
        return plan
    journal = Journal()
    executor = (dry or DryRun(out)) if dry_run else LiveExecutor(cluster, out, progress=progress)
    try:
        run_steps(plan.steps, executor, journal)
    except KeyboardInterrupt:
        out(f"interrupted: teardown of {target.namespace} is incomplete; run it again to finish")
        raise
    if dry_run:
        if dry is None:
            out(executor.summary(target.context, target.namespace))
        return plan
    start = time.monotonic()
    with progress("waiting for the removed objects to be gone") as update:
        while left := td.leftovers([o for o in find_labelled(cluster, sel) if not spare(o)], target.namespace,
                                     pattern, stack, keep_pvcs):
            if time.monotonic() - start >= timeout:
                raise LightrailError(f"teardown left {len(left)} labelled object(s) after {timeout:.0f} s:\n  "
                                     + "\n  ".join(left), fix="check their finalizers, then run teardown again")
            update(f"{len(left)} left, e.g. {left[0]}")
            time.sleep(poll)
    out(f"removed ({len(plan.removes)}):")
    for item in plan.removes:
        out(f"  {item}")
    for item in plan.kept:
        out(f"  kept: {item} (--keep-pvcs)")
    out(f"verified: no Lightrail object of {what} is left in {target.namespace} "
        f"(namespace {target.namespace} itself is kept)")
    return plan


# ---------------------------------------------------------------------------------------------
# up


def up(name: str, namespace: str, *, engine: str = "kind", nodes: str = kwokops.DEFAULT_NODES, dry_run: bool,
       out: Out, timeout: float = 900, smoke_for: Callable[[Plan, Target], Callable[[], None]] | None = None,
       progress: Progress = no_progress) -> None:
    """A local cluster -> prereqs -> sim baseline on llmd -> smoke (kind) or status (kwok: no data plane)."""
    from lightrail.plan import Request, build_plan
    from lightrail.settings import charts_dir, schemas_dir

    plan = build_plan(Request(pattern="baseline", accel="sim", stack="llmd", namespace=namespace))
    if engine == "kwok":   # everything is validated before the first step changes anything
        kwokops.check_name(name)
        node_objects = kwokops.node_objects(kwokops.parse_nodes(nodes))
    else:
        kindops.check_name(name)
    desired = desired_state(plan, charts_dir())   # rendered and validated before the first step
    dry = DryRun(out) if dry_run else None   # one numbering and one summary for every part
    executor = dry or LiveExecutor(None, out, progress=progress)
    if engine == "kwok":
        missing = kwokops.missing_binaries()
        problem = f"the local control plane is not built: {', '.join(missing)} missing in .tools/bin" if missing else None
        fix = "run scripts/setup (needs a Go toolchain)"
        target = Target(kwokops.context(name), namespace, f"kwok cluster {name}")
        create = kwokops.create_step(name)
    else:
        problem = kindops.docker_problem()
        problem = problem and f"`invoke up` with kind needs a Docker engine: {problem}"
        fix = "start Docker, or use --engine=kwok (a local control plane, no Docker)"
        target = Target(kindops.context(name), namespace, f"kind cluster {name}")
        create = kindops.create_step(name)
    if problem and not dry_run:
        raise LightrailError(problem, fix=fix)
    out(f"quick start on {target.banner()}" + (" — dry run, nothing is changed" if dry_run else ""))
    if problem:
        out(f"note: {problem}")
    executor.run(create)
    crds = None
    if engine == "kwok":
        if not dry_run:
            executor = LiveExecutor(KubeCluster(target.context), out, progress=progress)
        executor.run(st.apply(target, node_objects, f"create {len(node_objects)} simulated node(s): {nodes}",
                              force=True))
        crds = schemas_dir()
    cluster = None if dry_run else KubeCluster(target.context)
    prereqs(target, cluster, stack="llmd", provider="istio", istio=engine == "kind", dry_run=dry_run, out=out,
            local_crds=crds, dry=dry, progress=progress)
    if engine == "kwok":   # after the CRDs: istiod watches the Gateway API kinds from its start
        executor.run(kwokops.controller_step(name))
    smoke = smoke_for(plan, target) if smoke_for and engine == "kind" else None
    if smoke_for and engine == "kwok":
        out("note: no smoke on kwok: its pods are simulated, nothing serves requests")
    deploy(plan, target, cluster, dry_run=dry_run, out=out, timeout=timeout, smoke=smoke, dry=dry, progress=progress,
           desired=desired)
    if dry:
        out(dry.summary(target.context, target.namespace))
    if cluster is not None:
        for row in status(cluster, namespace):
            out(f"status: {row.pattern} ({row.stack}, {row.accel}) {row.ready}/{row.desired} ready, {row.last_condition}")


def down(name: str, *, engine: str, dry_run: bool, out: Out, progress: Progress = no_progress) -> None:
    """Stop a local cluster made by `up` and remove its files (kind: the node containers)."""
    executor = DryRun(out) if dry_run else LiveExecutor(None, out, progress=progress)
    if engine == "kwok":
        kwokops.check_name(name)
        executor.run(kwokops.delete_step(name))
    else:
        kindops.check_name(name)
        executor.run(st.Step(f"delete kind cluster {name}", tool="kind", args=("delete", "cluster", "--name", name),
                             timeout=300))
