"""`invoke migrate`: move a running pattern to the other stack behind the same Gateway (docs/migrate.md)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lightrail.catalog import STACKS, load_catalog
from lightrail.cli import command, user_errors
from lightrail.cli.common import PLAN_HELP, PLAN_ITERABLE, make_request, seconds, whole_number
from lightrail.cli.ops import COMMON_HELP, interruptible, out
from lightrail.cli.output import progress
from lightrail.errors import LightrailError, choose
from lightrail.ops import flows
from lightrail.ops.secrets import read_token
from lightrail.plan import build_plan

HELP = {
    **{k: PLAN_HELP[k] for k in ("pattern", "accel", "model", "replicas", "gpu_type", "topology", "vllm_arg",
                                 "inference_engine", "alias", "weights", "cache_size")},
    **COMMON_HELP,
    "to": "the stack to move to: kserve | llmd (the source is the other one, found running)",
    "steps": "the target's share in percent after each step, rising to 100 (default 1,5,10,25,50,75,100)",
    "hold": "seconds each weight is held while the target is probed and guarded (default 60)",
    "settle": "seconds the gateway gets to apply each route change (default 5)",
    "drain": "seconds the source's in-flight requests get to finish after it leaves the route (default 30)",
    "surge": "run the target beside the source (default); --no-surge swaps one replica (moe: one LWS group) at a "
             "time in the source's room, the weights following (needs 2+ replicas)",
    "url": "the Gateway's address as this machine reaches it, for the probes (e.g. a port-forward)",
    "metrics_url": "the gateway proxy's Prometheus counters, Istio's or agentgateway's (e.g. a port-forward to "
                   "its port 15020: http://127.0.0.1:15020/stats/prometheus): each hold shows client requests per "
                   "side, and a 5xx answered from the target trips the guard",
    "ca_file": "PEM bundle of the CA that signed an https --url's certificate (a private CA); default: the "
               "system's CAs",
    "resume": "continue an interrupted or paused migration from the state in the cluster",
    "rollback": "undo a migration in progress, back to the source exactly as it ran",
    "yes": "do not ask before changing the cluster (needed when not on a terminal)",
    "timeout": "seconds each deploy may take to become ready (default 900)",
    "hf_token_file": "file holding the Hugging Face token (default: $HF_TOKEN); never printed or written",
    "charts": "directory of upstream charts for llmd (default: $LIGHTRAIL_CHARTS)",
    "latency_margin": "seconds the target's probe latency median may exceed the source's before the guard trips "
                      "(the limit is the larger of this and 3x the source's; default 1)",
    "keep_pvcs": "keep the source's PersistentVolumeClaims (model caches) when it is removed (default)",
    "warm_prompts": "caching: a JSON Lines file of {\"prompt\": ...} (as `vllm bench serve --dataset-name=custom` "
                    "reads) the target's prefix caches are warmed with before it gets weight: the prefixes your "
                    "clients share (system prompts, few-shot examples); default: generic prompts",
}


def _duration(value: str, flag: str) -> float:
    return 0.0 if str(value).strip() in ("0", "0.0") else seconds(value, flag)


def _steps(value: str) -> tuple[int, ...]:
    if not value:
        return tuple(load_catalog().migration["steps"])
    return tuple(whole_number(v.strip(), "--steps", minimum=1, maximum=100) for v in value.split(","))


@command(help=HELP, iterable=PLAN_ITERABLE)
@user_errors
@interruptible
def migrate(c, pattern="", to="", accel="", model=None, replicas="", gpu_type="", topology="", vllm_arg=None,
            inference_engine="", alias=None, weights="", cache_size="", namespace="lightrail", kube_context="", steps="", hold="60", settle="5", drain="30", surge=True,
            url="", resume=False, rollback=False, yes=False, timeout="900", hf_token_file="", charts="",
            keep_pvcs=True, latency_margin="1", dry_run=False, ca_file="", metrics_url="", warm_prompts=""):
    """Move a running pattern between stacks behind its Gateway, weight by weight, with zero failed requests."""
    from lightrail.migrate.plan import Options, check_migratable
    from lightrail.migrate.context import Context
    from lightrail.migrate.run import resume as resume_migration, start
    from lightrail.settings import charts_dir
    from lightrail.smoke.checks import check_url, trust

    if not (yes or dry_run) and not sys.stdin.isatty():
        raise LightrailError("a migration changes the cluster: pass --yes (stdin is not a terminal to ask)")
    if resume and rollback:
        raise LightrailError("--resume and --rollback exclude each other: choose one")
    if not pattern:
        raise LightrailError(f"--pattern is required; valid: {', '.join(load_catalog().patterns)}")
    load_catalog().pattern(pattern)
    if not surge and steps:
        raise LightrailError("--steps and --no-surge exclude each other: with --no-surge the weights follow the "
                             "replicas swapped (1/R, 2/R, ... 100 %)")
    options = Options(steps=_steps(steps), hold=_duration(hold, "--hold"), settle=_duration(settle, "--settle"),
                      drain=_duration(drain, "--drain"), surge=surge, keep_pvcs=keep_pvcs,
                      timeout=seconds(timeout), latency_margin=seconds(latency_margin, "--latency-margin"),
                      warm_prompts=_warm_prompts(warm_prompts) if warm_prompts else ())
    url = check_url(url) if url else ""
    metrics_url = check_url(metrics_url, "--metrics-url") if metrics_url else ""
    verify = trust(ca_file)
    token = read_token(hf_token_file or None)
    chart_root = charts_dir(charts or None)
    source = None
    if not (resume or rollback):
        choose("--to", to, STACKS)
        if not accel:
            raise LightrailError("--accel is required to find the source deployment (gpu | tpu | cpu | sim)")
        source_stack = next(s for s in STACKS if s != to)
        request = make_request(pattern, accel, source_stack, model, replicas, namespace, gpu_type, topology,
                               vllm_arg=vllm_arg, inference_engine=inference_engine, alias=alias, weights=weights,
                               cache_size=cache_size)
        source = build_plan(dataclasses.replace(request, hf_token=token is not None))
        check_migratable(source, to, surge, bool(options.warm_prompts))
    elif to or accel or model or alias or warm_prompts:
        raise LightrailError("--resume and --rollback take the migration from the cluster: drop --to, --accel, "
                             "--model, --alias and --warm-prompts")
    target, cluster = flows.connect(kube_context, namespace, dry_run, out, progress=progress)
    ctx = Context(target=target, cluster=cluster, out=out, dry_run=dry_run, url=url, token=token, charts=chart_root,
                  progress=progress, trust=verify, metrics_url=metrics_url)
    out(target.banner())
    if source is not None:
        start(source, to, options, ctx, confirm=lambda: _confirm(yes))
    else:
        if not dry_run:
            _confirm(yes)
        resume_migration(pattern, namespace, ctx, rollback=rollback)


def _warm_prompts(path: str) -> tuple[str, ...]:
    from lightrail.migrate.plan import warm_prompts

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LightrailError(f"--warm-prompts {path}: cannot read it ({getattr(err, 'strerror', None) or err})",
                             fix="a JSON Lines file of {\"prompt\": \"...\"}") from None
    return warm_prompts(text, path)


def _confirm(yes: bool) -> None:
    if not yes and input("proceed? [y/N] ").strip().lower() not in ("y", "yes"):
        raise LightrailError("not confirmed; nothing was changed")
