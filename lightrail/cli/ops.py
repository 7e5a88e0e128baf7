"""`invoke doctor | prereqs | deploy | status | teardown | up`: cluster operations.

Every task takes --kube-context (wins over the current context), --namespace and --dry-run
(prints every command and object in order, changes nothing). Ctrl-C exits 130 after saying
what was left half-applied.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys

from invoke import Exit, task
from rich.console import Console
from rich.table import Table

from lightrail.cli import user_errors
from lightrail.cli.common import PLAN_HELP, PLAN_ITERABLE, make_request
from lightrail.errors import LightrailError
from lightrail.ops import checks as ck
from lightrail.ops import flows
from lightrail.ops.executor import sigterm_as_interrupt
from lightrail.ops.secrets import read_token
from lightrail.plan import build_plan

COMMON_HELP = {
    "kube_context": "kube context to act on (default: the kubeconfig's current context, printed before any change)",
    "namespace": "namespace of the deployment (default: lightrail)",
    "dry_run": "print every command and object that would be sent, in order; change nothing",
}


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
          token=None):
    request = make_request(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider,
                           kserve_api, vllm_arg)
    return build_plan(dataclasses.replace(request, hf_token=token is not None))


def _smoke_for(plan, target):
    """The smoke run `deploy --smoke` ends with: discovery through the target's context, real requests."""
    def run():
        from lightrail.cli.smoke import print_report
        from lightrail.smoke.runner import smoke_plan

        report = smoke_plan(plan, kube_context=target.context, timeout=120.0)
        print_report(report)
        if not report.ok:
            raise LightrailError("smoke failed: " + ", ".join(c.name for c in report.checks if not c.ok))
    return run


@task(help={**PLAN_HELP, **COMMON_HELP, "pattern": "check for this pattern's plan too (with --accel)",
            "accel": "accelerator of the plan to check: gpu | tpu | cpu | sim",
            "hf_token_file": "file holding the HF token (default: $HF_TOKEN) — only whether one is given is checked"},
      iterable=PLAN_ITERABLE)
@user_errors
def doctor(c, pattern="", accel="", stack="llmd", model=None, replicas=None, namespace="lightrail", gpu_type="",
           topology="", provider="istio", kserve_api="v1alpha2", vllm_arg=None, kube_context="", hf_token_file="",
           dry_run=False):
    """Can this cluster run the plan? Tools, context, CRDs, GatewayClass, accelerator capacity, HF token."""
    token = read_token(hf_token_file or None)
    plan = _plan(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider, kserve_api,
                 vllm_arg, token) if pattern or accel else None
    target, cluster = flows.connect(kube_context, namespace, True, out)
    out(f"doctor on {target.banner()} (reads only)")
    objects = None
    if plan is not None:
        from lightrail.render import render_validated
        from lightrail.settings import charts_dir

        objects = render_validated(plan, charts=charts_dir(), offline=plan.stack == "llmd" and charts_dir() is None).objects
    results = flows.doctor(target, cluster, stack, provider, plan, objects, token is not None)
    for line in flows.check_table(results):
        out(line)
    bad = ck.failed(results)
    if bad:
        raise LightrailError(f"{len(bad)} check(s) failed")
    out("all checks passed" if not any(r.status == ck.WARN for r in results) else "passed with warnings")


@task(help={**COMMON_HELP, "stack": "llmd | kserve", "provider": "llmd gateway provider: istio | gke | agentgateway",
            "istio": "llmd with provider istio: also install Istio (pinned) when no istio GatewayClass exists",
            "local_crds": "apply the pinned CRDs from $LIGHTRAIL_SCHEMAS (the same release files) instead of their "
                          "release URLs: no network needed; LWS then comes without its controller"})
@user_errors
@interruptible
def prereqs(c, stack="llmd", provider="istio", istio=False, local_crds=False, kube_context="", namespace="lightrail",
            dry_run=False):
    """Install the cluster prerequisites from pinned upstream sources (idempotent); name what must already exist."""
    from lightrail.settings import schemas_dir

    crds = schemas_dir() if local_crds else None
    if local_crds and crds is None:
        raise LightrailError("--local-crds needs the upstream CRD files", fix="set LIGHTRAIL_SCHEMAS=DIR")
    target, cluster = flows.connect(kube_context, namespace, dry_run, out)
    result = flows.prereqs(target, cluster, stack=stack, provider=provider, istio=istio, dry_run=dry_run, out=out,
                           local_crds=crds)
    if result.missing:
        raise LightrailError(f"{len(result.missing)} prerequisite(s) must be installed separately (listed above)")


@task(help={**PLAN_HELP, **COMMON_HELP,
            "hf_token_file": "file holding the Hugging Face token (default: $HF_TOKEN); stored in a Secret via the "
                             "API, never printed or written",
            "wait": "wait until every object is ready (default; --no-wait returns after applying)",
            "timeout": "seconds to wait for readiness before rolling back (default 900)",
            "smoke": "run `invoke smoke` against the endpoint once ready",
            "charts": "directory of upstream charts for llmd (default: $LIGHTRAIL_CHARTS)"},
      iterable=PLAN_ITERABLE)
@user_errors
@interruptible
def deploy(c, pattern="", accel="", stack="llmd", model=None, replicas=None, namespace="lightrail", gpu_type="",
           topology="", provider="istio", kserve_api="v1alpha2", vllm_arg=None, kube_context="", hf_token_file="",
           wait=True, timeout=900, smoke=False, charts="", dry_run=False):
    """Deploy a pattern: checks, namespace, HF token Secret, apply, wait, endpoint; roll back on failure."""
    from lightrail.settings import charts_dir

    if smoke and not wait:
        raise LightrailError("--smoke needs the deployment to be ready: drop --no-wait")
    token = read_token(hf_token_file or None)
    plan = _plan(pattern, accel, stack, model, replicas, namespace, gpu_type, topology, provider, kserve_api,
                 vllm_arg, token)
    target, cluster = flows.connect(kube_context, namespace, dry_run, out)
    flows.deploy(plan, target, cluster, dry_run=dry_run, out=out, token=token, wait=wait, timeout=float(timeout),
                 smoke=_smoke_for(plan, target) if smoke else None, charts=charts_dir(charts or None))


@task(help={**COMMON_HELP, "namespace": "only this namespace (default: all namespaces)",
            "json_": "print the deployments as JSON"})
@user_errors
def status(c, namespace="", kube_context="", json_=False, dry_run=False):
    """Every Lightrail deployment found by its labels: pattern, stack, models, replicas, endpoint, age, condition."""
    target, cluster = flows.connect(kube_context, namespace, False, out if not json_ else lambda _: None)
    rows = flows.status(cluster, namespace)
    if json_:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
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
    Console().print(table)


@task(help={**COMMON_HELP, "pattern": "remove this pattern's deployment", "all_": "remove every Lightrail deployment "
            "in the namespace", "stack": "only this stack's (default: both)",
            "keep_pvcs": "keep PersistentVolumeClaims (downloaded weights)",
            "timeout": "seconds to wait for everything to be gone (default 600)"})
@user_errors
@interruptible
def teardown(c, pattern="", all_=False, stack="", namespace="lightrail", keep_pvcs=False, timeout=600,
             kube_context="", dry_run=False):
    """Remove everything a deploy created, then verify no Lightrail-labelled object is left."""
    if bool(pattern) == bool(all_):
        raise LightrailError("give exactly one of --pattern=NAME or --all")
    target, cluster = flows.connect(kube_context, namespace, dry_run, out)
    flows.teardown(target, cluster, pattern=pattern or None, stack=stack or None, keep_pvcs=keep_pvcs,
                   dry_run=dry_run, out=out, timeout=float(timeout))


ENGINE_HELP = "kind (needs Docker) | kwok (a real control plane built locally, simulated nodes and pods); " \
              "default: kind where `docker info` works, else kwok"


def _engine(engine: str) -> str:
    from lightrail.ops import kind

    if not engine:
        return "kind" if kind.docker_problem() is None else "kwok"
    if engine not in ("kind", "kwok"):
        raise LightrailError(f"unknown engine {engine!r}; valid: kind, kwok")
    return engine


@task(help={**COMMON_HELP, "name": "cluster name (default lightrail; its context is kind-NAME or kwok-NAME)",
            "kube_context": "must be ENGINE-NAME if given: `up` acts only on the cluster it creates",
            "engine": ENGINE_HELP,
            "nodes": "kwok: simulated nodes shaped like GKE's, e.g. cpu:4,tpu:v6e-2x4:2,gpu:h100:2 (default cpu:2)",
            "timeout": "seconds to wait for readiness (default 900)", "smoke": "smoke the deployment (default; kind only)"})
@user_errors
@interruptible
def up(c, name="lightrail", namespace="lightrail", kube_context="", engine="", nodes="cpu:2", timeout=900, smoke=True,
       dry_run=False):
    """Quick start: a local cluster, prerequisites, sim baseline on llmd, smoke (kind) or status (kwok)."""
    engine = _engine(engine)
    if kube_context and kube_context != f"{engine}-{name}":
        raise LightrailError(f"--kube-context={kube_context} but `up` acts on the cluster it creates, "
                             f"{engine}-{name}; valid: {engine}-{name}")
    flows.up(name, namespace, engine=engine, nodes=nodes, dry_run=dry_run, out=out, timeout=float(timeout),
             smoke_for=_smoke_for if smoke else None)


@task(help={"name": "cluster name given to `invoke up` (default lightrail)", "engine": ENGINE_HELP,
            "dry_run": "print what would be removed; change nothing"})
@user_errors
def down(c, name="lightrail", engine="", dry_run=False):
    """Stop the local cluster `invoke up` made and remove its files; no process is left behind."""
    flows.down(name, engine=_engine(engine), dry_run=dry_run, out=out)
