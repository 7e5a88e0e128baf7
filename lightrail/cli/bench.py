"""`invoke bench`, `bench.compare`, `bench.list`: run real harnesses, keep every run, compare runs."""
from __future__ import annotations

import contextlib
import os
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path

from invoke import Collection, Program
from rich.table import Table

from lightrail.bench import compare as comparing
from lightrail.bench import incluster, runner, scenarios, store
from lightrail.bench.harnesses import HARNESSES, Target
from lightrail.cli import command, user_errors
from lightrail.cli.common import models, out_dir, seconds
from lightrail.cli.output import OUTPUT_HELP, console, emit, output_format, progress
from lightrail.errors import LightrailError, choose
from lightrail.plan import Request, build_plan
from lightrail.render import dump_yaml
from lightrail.settings import results_dir
from lightrail.smoke import checks
from lightrail.smoke.checks import check_url, mask_url
from lightrail.validate import check


@command(
    default=True,
    help={
        "pattern": "the deployed pattern: baseline | multimodel | caching | moe",
        "accel": "gpu | tpu | cpu | sim (models, run name and price; default gpu)",
        "stack": "llmd | kserve (default llmd)",
        "namespace": "namespace of the deployment (discovery, in-cluster Job)",
        "kube_context": "kube context for discovery and --in-cluster (default: the current one)",
        "url": "OpenAI-compatible base URL; skips discovery (a gateway, a local vLLM, a tunnel)",
        "model": "a served model name instead of the pattern's (repeatable)",
        "metrics_url": "a model server's /metrics for counters and prefix-cache hits (repeatable; "
                       "default with --url: URL/metrics)",
        "tokenizer": "tokenizer id or local path for the harness (default: the first model; a path works offline)",
        "scenario": f"workload from benchmarks/scenarios/ ({', '.join(scenarios.available())}) or a YAML path",
        "harness": f"{' | '.join(HARNESSES)} (default vllm = `vllm bench serve`)",
        "in_cluster": "run the harness as a Kubernetes Job next to the gateway",
        "out": "results root (default benchmarks/results, or LIGHTRAIL_RESULTS)",
        "dry_run": "print what would run (commands, or the Job) and write nothing",
        "timeout": "seconds allowed for each harness run (default 3600)",
        "ca_file": "PEM bundle of the CA that signed an https endpoint's certificate (a private CA); the "
                   "harness trusts it alone; default: the system's CAs",
    },
    iterable=["model", "metrics_url"],
)
@user_errors
def run(c, pattern="", accel="gpu", stack="llmd", namespace="lightrail", kube_context="", url="", model=None,
        metrics_url=None, tokenizer="", scenario="", harness="vllm", in_cluster=False, out="", dry_run=False,
        timeout="3600", ca_file=""):
    """Run a scenario with a real harness against a pattern's endpoint; store the run."""
    if not pattern:
        raise LightrailError("--pattern is required (e.g. --pattern=baseline --accel=gpu --scenario=smoke)")
    if not scenario:
        raise LightrailError(f"--scenario is required; valid: {', '.join(scenarios.available())}")
    limit = seconds(timeout)
    choose("harness", harness, HARNESSES)
    plan = build_plan(Request(pattern=pattern, accel=accel, stack=stack, namespace=namespace, models=models(model)))
    scn = scenarios.load_scenario(scenario)
    root = out_dir(str(results_dir(out or None)))
    _check_tokenizer(tokenizer, in_cluster)
    checks.trust(ca_file)
    if ca_file and in_cluster:
        raise LightrailError("--ca-file is for a harness on this machine; the --in-cluster Job reaches the gateway's "
                             "in-cluster address", fix="drop --ca-file, or run the harness here with --url=https://...")
    ca_file = str(Path(ca_file).expanduser().resolve()) if ca_file else ""   # the harness runs in the run's directory
    kube_context = kube_context or None
    if not (url or dry_run):    # served through a front route after a migration: its Gateway, its names
        from lightrail.smoke.discovery import as_deployed

        plan = as_deployed(plan, kube_context)
    if in_cluster:
        target = _target(plan, url or incluster.default_url(plan), tokenizer, metrics_url, "")
        if dry_run:
            return _dry_run_job(plan, scn, harness, target, root)
        path = runner.run(plan, scn, harness, target, root, timeout=limit, in_cluster=True,
                          kube_context=kube_context, progress=progress)
        return _report(path)
    endpoint = contextlib.nullcontext(check_url(url)) if url else _discover(plan, kube_context, dry_run)
    with endpoint as base:
        default_metrics = [f"{base}/metrics"] if url else []
        target = _target(plan, base, tokenizer, metrics_url or default_metrics, ca_file)
        if dry_run:
            return _dry_run_local(plan, scn, harness, target, root)
        path = runner.run(plan, scn, harness, target, root, timeout=limit, progress=progress)
    _report(path)


@command(
    help={
        "runs": "two or more run directories or names from `bench.list`, separated by commas or spaces",
        "out": "a new or empty directory for compare.md and the PNGs (default <results>/compare-<timestamp>)",
        "mixed": "allow comparing runs of different scenarios",
    },
)
@user_errors
def compare(c, runs, out="", mixed=False):
    """Compare stored runs: a Markdown table and PNG plots."""
    refs = [r for r in re.split(r"[,\s]+", runs) if r]
    if refs in (["-h"], ["--help"]):   # invoke takes the positional before its own --help: show that help
        root = Collection()
        root.add_collection(Collection("bench", compare))
        Program(namespace=root, binary="invoke").run(["invoke", "--help", "bench.compare"])
    if any(r.startswith("-") for r in refs):
        raise LightrailError(f"{refs[0]!r} is not a run name; usage: invoke bench.compare RUN_A,RUN_B [--out=DIR] "
                             "(see `invoke bench.compare --help`)")
    paths = list(dict.fromkeys(store.resolve(r) for r in refs))
    if len(paths) < 2:
        raise LightrailError(f"comparing needs two or more different runs, got {len(paths)}",
                             fix="see `invoke bench.list` for stored runs")
    target = out_dir(out) if out else results_dir() / f"compare-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    if target.is_dir() and any(target.iterdir()):
        raise LightrailError(f"--out {target} is not empty; valid: a new or empty directory")
    result = comparing.compare(paths, target, mixed=mixed)
    print(result.table)
    for f in result.files:
        print(f"wrote {f}")


@command(name="list", help={"out": "results root (default benchmarks/results, or LIGHTRAIL_RESULTS)",
                             "output": OUTPUT_HELP})
@user_errors
def list_(c, out="", output="table"):
    """The stored runs, newest first."""
    fmt = output_format(output)
    root = results_dir(out or None)
    given = "--out" if out else "LIGHTRAIL_RESULTS" if os.environ.get("LIGHTRAIL_RESULTS") else ""
    if given and not root.is_dir():   # only the default may be missing: no run stored yet
        raise LightrailError(f"{given} {root} is {'not a directory' if root.exists() else 'missing'}; "
                             "valid: a results directory (see LIGHTRAIL_RESULTS)")
    found = store.runs(root)
    if fmt != "table":
        emit([{"run": p.name, "path": str(p), **_brief(store.load(p)[0])} for p in found], fmt)
        return
    if not found:
        print(f"no stored runs in {root}")
        return
    table = Table(title=f"benchmark runs in {root}")
    for col in ("run", "harness", "points", "ok/failed", "TTFT p90 ms", "out tok/s", "prefix hit"):
        table.add_column(col)
    for path in found:
        s, _ = store.load(path)
        first, totals = s["points"][0], s["totals"]
        hit = (totals.get("prefix_cache") or {}).get("hit_rate")
        table.add_row(path.name, s["harness"], str(len(s["points"])),
                      f"{totals['requests']['ok']}/{totals['requests']['failed']}",
                      f"{first['latency_ms']['ttft']['p90']:.1f}", f"{first['throughput']['output_tokens_per_s']:.1f}",
                      "n/a" if hit is None else f"{hit:.1%}")
    console().print(table)


def _brief(s: dict) -> dict:
    return {"scenario": s["scenario"], "harness": s["harness"], "points": len(s["points"]),
            "requests": s["totals"]["requests"], "prefix_cache": s["totals"].get("prefix_cache")}


def _check_tokenizer(tokenizer: str, in_cluster: bool) -> None:
    """A tokenizer path must exist; offline, one is needed (the default is a Hugging Face id to download)."""
    if tokenizer and tokenizer.startswith(("/", "./", "../", "~")) and not Path(tokenizer).expanduser().exists():
        raise LightrailError(f"--tokenizer {tokenizer}: no such file or directory; valid: a local tokenizer "
                             "directory or a Hugging Face id")
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline and not tokenizer and not in_cluster:
        raise LightrailError("HF_HUB_OFFLINE is set and the default tokenizer is a Hugging Face id to download; "
                             "pass --tokenizer=PATH (offline)")


def _target(plan, url: str, tokenizer: str, metrics_urls, ca_file: str) -> Target:
    models = plan.served_models
    return Target(url=url.rstrip("/"), models=models, tokenizer=tokenizer or models[0],
                  metrics_urls=tuple(metrics_urls or ()), ca_file=ca_file)


@contextlib.contextmanager
def _discover(plan, kube_context, dry_run: bool):
    if dry_run:
        yield "<discovered-endpoint>"
        return
    from lightrail.smoke.discovery import discover

    with discover(plan, kube_context) as base:
        yield base


def _dry_run_local(plan, scn, harness: str, target: Target, root: Path) -> None:
    prepared = runner.prepare(plan, scn, harness, target, root)
    print(f"# would store the run in {root / prepared.name}")
    if target.ca_file:
        print(f"# the harness trusts only SSL_CERT_FILE={target.ca_file}")
    for load, (argv, files) in zip(scn.points, prepared.commands):
        print(f"# load point {load.label}")
        for name, text in files.items():
            print(f"# input file {name}:\n{text}")
        print(shlex.join(mask_url(a) if a.startswith(("http://", "https://")) else a for a in argv))


def _dry_run_job(plan, scn, harness: str, target: Target, root: Path) -> None:
    if harness != "vllm":
        raise LightrailError(f"--in-cluster runs `vllm bench serve` from the pinned vLLM image; got --harness={harness}")
    prepared = runner.prepare(plan, scn, harness, target, root)
    manifest = incluster.job(plan, scn, target, incluster.job_name(prepared.name))
    check([manifest])
    print(f"# would create this Job, collect its log, delete it and store the run in {root / prepared.name}")
    print(dump_yaml(manifest), end="")


def _report(path: Path) -> None:
    s, _ = store.load(path)
    table = Table(title=f"{s['scenario']} with {s['harness']}")
    for col in ("load", "ok/failed", "TTFT p50/p90 ms", "ITL p50/p90 ms", "E2E p90 ms", "out tok/s", "prefix hit",
                f"{s['currency']}/M out tok"):
        table.add_column(col)
    for p in s["points"]:
        lat, cache, cost = p["latency_ms"], p.get("prefix_cache") or {}, p.get("cost_per_million_output_tokens")
        table.add_row(f"rate {p['load']['request_rate']}" + (f" conc {p['load']['max_concurrency']}" if p['load']['max_concurrency'] else ""),
                      f"{p['requests']['ok']}/{p['requests']['failed']}",
                      f"{lat['ttft']['p50']:.1f} / {lat['ttft']['p90']:.1f}", f"{lat['itl']['p50']:.2f} / {lat['itl']['p90']:.2f}",
                      f"{lat['e2e']['p90']:.1f}", f"{p['throughput']['output_tokens_per_s']:.1f}",
                      "n/a" if cache.get("hit_rate") is None else f"{cache['hit_rate']:.1%}",
                      "n/a" if cost is None else f"{cost:.4g}")
    console().print(table)
    print(f"stored {path}")


ns = Collection("bench")
ns.add_task(run, default=True)
ns.add_task(compare)
ns.add_task(list_, name="list")
