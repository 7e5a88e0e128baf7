"""`invoke doctor | prereqs | deploy | status | teardown | up`: cluster operations.

Every task takes -k/--kube-context (wins over the current context), -n/--namespace and --dry-run
(prints every command and object in order, changes nothing). Every flag is checked before the
first step. Ctrl-C exits 130 after saying what was left half-applied.
"""
from __future__ import annotations

import dataclasses
import functools
import sys

from invoke import Exit
from rich.table import Table

from lightrail.catalog import STACKS, load_catalog
from lightrail.cli import command, user_errors
from lightrail.cli.common import PLAN_HELP, PLAN_ITERABLE, make_request, seconds
from lightrail.cli.output import OUTPUT_HELP, console, emit, message, output_format, progress
from lightrail.errors import LightrailError, choose
from lightrail.ops import checks as ck
from lightrail.ops import flows
from lightrail.ops.executor import sigterm_as_interrupt
from lightrail.ops.kind import check_name
from lightrail.ops.secrets import read_token
from lightrail.plan import build_plan, check_namespace_name

COMMON_HELP = {
    "kube_context": "kube context to act on (default: the kubeconfig's current context, printed before any change)",
    "namespace": "namespace of the deployment (default: lightrail)",
    "dry_run": "print every command and object that would be sent, in order; change nothing",
}
READS_ONLY = "this task only reads; accepted so every cluster task takes it, and changes nothing"


def out(line: str) -> None:
    print(line, flush=True)


def interruptible(fn):
    """Ctrl-C or SIGTERM: the flow has reported what it left behind; exit 130 without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise Exit(code=130) from None

    return wrapper


def _plan(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider, kserve_api, vllm_arg,
          token=None, inference_engine="", alias=(), weights="", cache_size="", **extra):
    request = make_request(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider,
                           kserve_api, vllm_arg, inference_engine, alias, weights, cache_size, **extra)
    return build_plan(dataclasses.replace(request, hf_token=token is not None))


def _smoke_for(plan, target):
    """The smoke run `deploy --smoke` ends with: discovery through the target's context, real requests."""
    def run():
        from lightrail.cli.smoke import print_report
        from lightrail.smoke.runner import smoke_plan

        with progress("smoke: waiting for the endpoint") as update:
            report = smoke_plan(plan, kube_context=target.context, timeout=120.0, progress=update)
        print_report(report)
        if not report.ok:
            raise LightrailError("smoke failed: " + ", ".join(c.name for c in report.checks if not c.ok))
    return run


@command(help={**PLAN_HELP, **COMMON_HELP, "pattern": "check for this pattern's plan too (with --accel)",
               "accel": "accelerator of the plan to check: gpu | tpu | cpu | sim",
               "hf_token_file": "file holding the HF token (default: $HF_TOKEN) — only whether one is given is checked",
               "dry_run": READS_ONLY, "output": OUTPUT_HELP},
         iterable=PLAN_ITERABLE)
@user_errors
def doctor(c, pattern="", accel="", stack="llmd", model=None, replicas="", namespace="lightrail", gpu_type="",
           topology="", provider="", kserve_api="", vllm_arg=None, kube_context="", hf_token_file="",
           dry_run=False, output="table", inference_engine="", alias=None, weights="", cache_size="", pod_security="",
           monitoring="", tls_secret="", cert_manager_issuer="", hostname=""):
    """Can this cluster run the plan? Tools, context, CRDs, GatewayClass, accelerator capacity, HF token."""
    fmt = output_format(output)
    say = out if fmt == "table" else message
    choose("stack", stack, STACKS)
    if provider and stack != "llmd":
        raise LightrailError(f"--provider applies to --stack=llmd only (got stack={stack})")
    choose("gateway provider", provider or "istio", load_catalog().gateways)
    token = read_token(hf_token_file or None)
    plan = _plan(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider, kserve_api,
                 vllm_arg, token, inference_engine, alias, weights, cache_size, pod_security=pod_security,
                 monitoring=monitoring, tls_secret=tls_secret, cert_manager_issuer=cert_manager_issuer,
                 hostname=hostname) if pattern or accel else None
    notes: list[str] = []   # shown once the render is valid
    target = flows.choose_target(kube_context, namespace, False, notes.append, reads_only=True)
    objects = None
    if plan is not None:   # rendered before connecting: a bad render has asked the cluster nothing
        from lightrail.render import render_validated
        from lightrail.settings import charts_dir

        objects = render_validated(plan, charts=charts_dir(), offline=plan.stack == "llmd" and charts_dir() is None).objects
    for note in notes:
        say(note)
    cluster = flows.reach(target, False, say, reads_only=True, progress=progress)
    say(f"doctor on {target.banner()} (reads only)")
    results = flows.doctor(target, cluster, stack, provider or "istio", plan, objects, token is not None)
    bad = ck.failed(results)
    if fmt != "table":
        emit({"ok": not bad, "context": target.context, "namespace": target.namespace,
              "checks": [dataclasses.asdict(r) for r in results]}, fmt)
    else:
        for line in flows.check_table(results):
            out(line)
    if bad and fmt != "table":   # the document on stdout already says so
        print(f"error: {len(bad)} check(s) failed", file=sys.stderr)
        raise Exit(code=1)
    if bad:
        raise LightrailError(f"{len(bad)} check(s) failed")
    say("all checks passed" if not any(r.status == ck.WARN for r in results) else "passed with warnings")


@command(help={**COMMON_HELP, "stack": "llmd | kserve",
               "provider": "gateway provider for --stack=llmd: istio | gke | agentgateway (default istio)",
               "istio": "llmd with provider istio: also install Istio (pinned) when no istio GatewayClass exists",
               "local_crds": "apply the pinned CRDs from $LIGHTRAIL_SCHEMAS (the same release files) instead of their "
                             "release URLs: no network needed; LWS then comes without its controller"})
@user_errors
@interruptible
def prereqs(c, stack="llmd", provider="", istio=False, local_crds=False, kube_context="", namespace="lightrail",
            dry_run=False):
    """Install the cluster prerequisites from pinned upstream sources (idempotent); name what must already exist."""
    from lightrail.settings import schemas_dir

    choose("stack", stack, STACKS)
    if stack != "llmd" and (provider or istio):
        raise LightrailError(f"--{'provider' if provider else 'istio'} applies to --stack=llmd only (got stack={stack})")
    provider = choose("gateway provider", provider or "istio", load_catalog().gateways)
    if istio and provider != "istio":
        raise LightrailError(f"--istio installs the istio provider; got --provider={provider}")
    crds = schemas_dir() if local_crds else None
    if local_crds and crds is None:
        raise LightrailError("--local-crds needs the upstream CRD files", fix="set LIGHTRAIL_SCHEMAS=DIR")
    target, cluster = flows.connect(kube_context, namespace, dry_run, out, progress=progress)
    result = flows.prereqs(target, cluster, stack=stack, provider=provider, istio=istio, dry_run=dry_run, out=out,
                           local_crds=crds, progress=progress)
    if result.missing and dry_run:
        out(f"note: a real run ends with exit code 1 unless these {len(result.missing)} prerequisite(s) exist "
            "(listed above)")
    elif result.missing:
        raise LightrailError(f"{len(result.missing)} prerequisite(s) must be installed separately (listed above)")


@command(help={**PLAN_HELP, **COMMON_HELP,
               "hf_token_file": "file holding the Hugging Face token (default: $HF_TOKEN); stored in a Secret via the "
                                "API, never printed or written",
               "wait": "wait until every object is ready (default; --no-wait returns after applying)",
               "timeout": "seconds to wait for readiness before rolling back (default 900)",
               "smoke": "run `invoke smoke` against the endpoint once ready",
               "charts": "directory of upstream charts for llmd (default: $LIGHTRAIL_CHARTS)"},
         iterable=PLAN_ITERABLE)
@user_errors
@interruptible
def deploy(c, pattern="", accel="", stack="llmd", model=None, replicas="", namespace="lightrail", gpu_type="",
           topology="", provider="", kserve_api="", vllm_arg=None, kube_context="", hf_token_file="",
           wait=True, timeout="900", smoke=False, charts="", dry_run=False, inference_engine="",
           alias=None, weights="", cache_size="", pod_security="", monitoring="", tls_secret="",
           cert_manager_issuer="", hostname=""):
    """Deploy a pattern: checks, namespace, HF token Secret, apply, wait, endpoint; roll back on failure."""
    from lightrail.ops.desired import desired_state
    from lightrail.settings import charts_dir

    if smoke and not wait:
        raise LightrailError("--smoke needs the deployment to be ready: drop --no-wait")
    limit = seconds(timeout)
    token = read_token(hf_token_file or None)
    plan = _plan(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider, kserve_api,
                 vllm_arg, token, inference_engine, alias, weights, cache_size, pod_security=pod_security,
                 monitoring=monitoring, tls_secret=tls_secret, cert_manager_issuer=cert_manager_issuer,
                 hostname=hostname)
    if plan.tls and smoke:
        raise LightrailError("--smoke over HTTPS is not built yet (smoke has no --ca-file): drop --smoke with TLS")
    notes: list[str] = []   # shown once the render is valid: a refused deploy prints nothing on stdout
    target = flows.choose_target(kube_context, namespace, dry_run, notes.append)
    desired = desired_state(plan, charts_dir(charts or None))   # a render that fails has asked the cluster nothing
    for note in notes:
        out(note)
    cluster = flows.reach(target, dry_run, out, progress=progress)
    flows.deploy(plan, target, cluster, dry_run=dry_run, out=out, token=token, wait=wait, timeout=limit,
                 smoke=_smoke_for(plan, target) if smoke else None, desired=desired, progress=progress)


@command(help={**COMMON_HELP, "namespace": "only this namespace (default: all namespaces)",
               "dry_run": READS_ONLY, "output": OUTPUT_HELP})
@user_errors
def status(c, namespace="", kube_context="", output="table", dry_run=False):
    """Every Lightrail deployment found by its labels: pattern, stack, models, replicas, endpoint, age, condition."""
    fmt = output_format(output)
    if namespace:
        check_namespace_name(namespace)
    target, cluster = flows.connect(kube_context, namespace or "default", False, out if fmt == "table" else message,
                                    progress=progress)
    rows = flows.status(cluster, namespace)
    if fmt != "table":
        emit([r.to_dict() for r in rows], fmt)
        return
    out(f"status on context {target.context} ({target.source}), {f'namespace {namespace}' if namespace else 'all namespaces'}")
    if not rows:
        out("no Lightrail deployments found")
        return
    table = Table()
    for col in ("namespace", "pattern", "stack", "accel", "models", "ready", "endpoint", "age", "last condition"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.namespace, r.pattern, r.stack, r.accel, "\n".join(r.models), f"{r.ready}/{r.desired}",
                      r.endpoint, r.age, r.last_condition)
    console().print(table)
    for where, line in sorted({(f"{r.namespace}/{r.pattern}", r.migration) for r in rows if r.migration}):
        out(f"migration in progress ({where}): {line}")


@command(help={**COMMON_HELP, "pattern": "remove this pattern's deployment", "all_": "remove every Lightrail "
               "deployment in the namespace", "stack": "only this stack's: llmd | kserve (default: both)",
               "keep_pvcs": "keep PersistentVolumeClaims: the weights (default; --no-keep-pvcs deletes them too)",
               "timeout": "seconds to wait for everything to be gone (default 600)"})
@user_errors
@interruptible
def teardown(c, pattern="", all_=False, stack="", namespace="lightrail", keep_pvcs=True, timeout="600",
             kube_context="", dry_run=False):
    """Remove everything a deploy created, then verify no Lightrail-labelled object is left."""
    if bool(pattern) == bool(all_):
        raise LightrailError("give exactly one of --pattern=NAME or --all")
    if pattern:
        load_catalog().pattern(pattern)
    if stack:
        choose("stack", stack, STACKS)
    limit = seconds(timeout)
    target, cluster = flows.connect(kube_context, namespace, dry_run, out, progress=progress)
    flows.teardown(target, cluster, pattern=pattern or None, stack=stack or None, keep_pvcs=keep_pvcs,
                   dry_run=dry_run, out=out, timeout=limit, progress=progress)


ENGINE_HELP = "kind (needs Docker) | kwok (a real control plane built locally, simulated nodes and pods); " \
              "default: kind where `docker info` works, else kwok"


def _engine(engine: str) -> str:
    from lightrail.ops import kind

    if not engine:
        return "kind" if kind.docker_problem() is None else "kwok"
    return choose("engine", engine, ("kind", "kwok"))


@command(help={**COMMON_HELP, "name": "cluster name (default lightrail; its context is kind-NAME or kwok-NAME)",
               "kube_context": "must be ENGINE-NAME if given: `up` acts only on the cluster it creates",
               "engine": ENGINE_HELP,
               "nodes": "kwok: simulated nodes shaped like GKE's, e.g. cpu:4,tpu:v6e-2x4:2,gpu:h100:2 (default cpu:2)",
               "timeout": "seconds to wait for readiness (default 900)",
               "smoke": "smoke the deployment (default; kind only: nothing serves requests on kwok)"})
@user_errors
@interruptible
def up(c, name="lightrail", namespace="lightrail", kube_context="", engine="", nodes="cpu:2", timeout="900", smoke=True,
       dry_run=False):
    """Quick start: a local cluster, prerequisites, sim baseline on llmd, smoke (kind) or status (kwok)."""
    limit = seconds(timeout)
    engine = _engine(engine)
    if engine == "kind":
        check_name(name)
    if kube_context and kube_context != f"{engine}-{name}":
        raise LightrailError(f"--kube-context={kube_context} but `up` acts on the cluster it creates, "
                             f"{engine}-{name}; valid: {engine}-{name}")
    flows.up(name, namespace, engine=engine, nodes=nodes, dry_run=dry_run, out=out, timeout=limit,
             smoke_for=_smoke_for if smoke else None, progress=progress)


@command(help={"name": "cluster name given to `invoke up` (default lightrail)", "engine": ENGINE_HELP,
               "dry_run": "print what would be removed; change nothing"})
@user_errors
def down(c, name="lightrail", engine="", dry_run=False):
    """Stop the local cluster `invoke up` made and remove its files; no process is left behind."""
    flows.down(name, engine=_engine(engine), dry_run=dry_run, out=out, progress=progress)
