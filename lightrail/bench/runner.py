"""Run a scenario with a harness against a target and store the run with its full context.

For each load point: scrape the model servers' counters, run the harness (a subprocess), read
its result, scrape again. The summary joins what the harness measured with what the servers
counted; the metadata records everything needed to reproduce or compare the run.
"""
from __future__ import annotations

import json
import os
import platform
import ssl
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from lightrail import __version__
from lightrail.bench import incluster, store, summary, vllm_serve
from lightrail.bench.harnesses import Target, adapter, ensure_installed, execute
from lightrail.bench.scenarios import Scenario
from lightrail.errors import LightrailError
from lightrail.plan import Plan
from lightrail.progress import Progress, no_progress
from lightrail.settings import ROOT
from lightrail.smoke import checks, metrics
from lightrail.smoke.checks import mask_url
from lightrail.validate import check


@dataclass(frozen=True)
class Prepared:
    """Everything a run will do, computed without side effects (what --dry-run prints)."""

    name: str
    root: Path
    commands: tuple[tuple[list[str], dict[str, str]], ...]   # per load point: argv and input files
    started: datetime


def prepare(plan: Plan, scenario: Scenario, harness: str, target: Target, root: Path) -> Prepared:
    started = datetime.now(timezone.utc)
    name = store.run_name(plan.pattern.name, plan.stack, plan.accel, scenario.name, started)
    raw = root / f".staging-{name}" / "raw"
    mod = adapter(harness)
    commands = tuple(mod.command(scenario, load, target, raw / f"point-{i:02d}") for i, load in enumerate(scenario.points))
    return Prepared(name=name, root=root, commands=commands, started=started)


def run(plan: Plan, scenario: Scenario, harness: str, target: Target, root: Path, *, timeout: float = 3600,
        in_cluster: bool = False, kube_context: str | None = None, log=print, progress: Progress = no_progress) -> Path:
    """Run every load point and store the run; on any failure nothing complete-looking remains.
    `progress` shows the silent waits: installing a harness, each harness run, the in-cluster Job."""
    if in_cluster and harness != "vllm":
        raise LightrailError(f"--in-cluster runs `vllm bench serve` from the pinned vLLM image; got --harness={harness}",
                             fix="use --harness=vllm with --in-cluster")
    if not in_cluster:
        check_reachable(target.url, trust=checks.trust(target.ca_file))
        if harness != "vllm":
            with progress(f"installing {harness} (once)"):
                ensure_installed(harness)
    mod = adapter(harness)
    prepared = prepare(plan, scenario, harness, target, root)
    staged = store.stage(root, prepared.name)
    try:
        if in_cluster:
            points, overall = _in_cluster(plan, scenario, target, staged, prepared, kube_context, timeout, log,
                                          progress)
        else:
            points = [_local_point(scenario, harness, target, staged, i, prepared.commands[i], timeout, log, progress)
                      for i in range(len(scenario.points))]
            overall = None
        for p in points:
            p["cost_per_million_output_tokens"] = summary.cost_per_million(
                plan.cost.per_hour, p["throughput"]["output_tokens_per_s"])
        ended = datetime.now(timezone.utc)
        doc = {"schema": summary.SCHEMA, "scenario": scenario.name, "harness": harness,
               "currency": plan.cost.currency, "points": points, "totals": summary.totals(points, overall)}
        meta = metadata(plan, scenario, harness, _version(mod, plan, in_cluster), target, prepared, ended)
        meta["in_cluster"] = in_cluster
        return store.commit(staged, doc, meta)
    except BaseException as err:
        failed = store.abandon(staged)
        if failed and isinstance(err, LightrailError):
            err.fix = "; ".join(filter(None, [err.fix, f"the failed run's logs are in {failed}"]))
        raise


def _local_point(scenario: Scenario, harness: str, target: Target, staged: Path, i: int,
                 command: tuple[list[str], dict[str, str]], timeout: float, log, progress: Progress) -> dict:
    load, (argv, files) = scenario.points[i], command
    out = staged / "raw" / f"point-{i:02d}"
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (out / fname).write_text(text)
    log(f"[{i + 1}/{len(scenario.points)}] {harness} {load.label}: {scenario.requests} requests to {mask_url(target.url)}")
    before = scrape(target.metrics_urls, target.ca_file)
    with progress(f"[{i + 1}/{len(scenario.points)}] {harness} {load.label}"):
        execute(argv, out / "harness.log", timeout=timeout, offline=target.tokenizer.startswith(("/", "./", "../")),
                ca_file=target.ca_file)
    p = adapter(harness).parse(out)
    after = scrape(target.metrics_urls, target.ca_file)
    _check_ok(p, load, target)
    return {"load": load.to_dict(), **p, **summary.server_side(before, after)}


def _in_cluster(plan: Plan, scenario: Scenario, target: Target, staged: Path, prepared: Prepared,
                kube_context: str | None, timeout: float, log, progress: Progress) -> tuple[list[dict], dict]:
    manifest = incluster.job(plan, scenario, target, incluster.job_name(prepared.name), timeout=int(timeout))
    check([manifest])
    (staged / "raw" / "job.json").write_text(json.dumps(manifest, indent=2))
    log(f"running Job {plan.namespace}/{manifest['metadata']['name']}: {len(scenario.points)} load point(s) "
        f"against {mask_url(target.url)}")
    before = scrape(target.metrics_urls)
    with progress(f"Job {plan.namespace}/{manifest['metadata']['name']}"):
        text = incluster.run_job(manifest, kube_context=kube_context, timeout=timeout + 300)
    after = scrape(target.metrics_urls)
    (staged / "raw" / "job.log").write_text(text)
    results = incluster.results(text)
    points = []
    for i, load in enumerate(scenario.points):
        key = f"point-{i:02d}"
        if key not in results:
            raise LightrailError(f"the benchmark Job printed no result for {key} ({load.label})")
        out = staged / "raw" / key
        out.mkdir(parents=True, exist_ok=True)
        (out / vllm_serve.RESULT).write_text(json.dumps(results[key]))
        p = vllm_serve.parse(out)
        _check_ok(p, load, target)
        points.append({"load": load.to_dict(), **p, "server": None, "prefix_cache": None})
    return points, summary.server_side(before, after)


def _check_ok(point: dict, load, target: Target) -> None:
    if point["requests"]["ok"] == 0:
        raise LightrailError(f"no request succeeded at {load.label}: {point['first_error'] or 'no error reported'}",
                             fix=f"does {mask_url(target.url)} serve {', '.join(target.models)}? (--model)")


def _version(mod, plan: Plan, in_cluster: bool) -> str:
    return f"vllm image {plan.versions['images']['vllm-cpu']}" if in_cluster else mod.version()


def check_reachable(url: str, timeout: float = 10, trust: ssl.SSLContext | bool = True) -> None:
    """Fail fast with a clear message instead of a harness stack trace."""
    try:
        resp = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=timeout, verify=trust)
    except httpx.HTTPError as err:
        raise LightrailError(f"cannot reach {mask_url(url)}: {checks.describe(err)}",
                             fix="check --url (or the deployment and its gateway)") from None
    if resp.status_code != 200:
        raise LightrailError(f"{mask_url(url)}/v1/models answered HTTP {resp.status_code}",
                             fix="is this an OpenAI-compatible endpoint?")


def scrape(urls: tuple[str, ...], ca_file: str = "") -> dict[str, float] | None:
    """Counters summed over the model servers, or None when they cannot be read (no hit rate then)."""
    if not urls:
        return None
    try:
        return metrics.scrape(list(urls), trust=checks.trust(ca_file))
    except httpx.HTTPError:
        return None


def metadata(plan: Plan, scenario: Scenario, harness: str, harness_version: str, target: Target,
             prepared: Prepared, ended: datetime) -> dict[str, Any]:
    return {
        "run": prepared.name,
        "pattern": plan.pattern.name, "stack": plan.stack, "accel": plan.accel, "accel_type": plan.accel_type,
        "namespace": plan.namespace,
        "models": list(plan.served_models), "replicas_total": plan.replicas_total,
        "cost": {"per_hour": plan.cost.per_hour, "currency": plan.cost.currency, "basis": plan.cost.basis},
        "target": {"url": mask_url(target.url), "models": list(target.models), "tokenizer": target.tokenizer,
                   "metrics_urls": [mask_url(u) for u in target.metrics_urls]},
        "harness": {"name": harness, "version": harness_version,   # stored runs never keep credentials
                    "commands": [[mask_url(a) if a.startswith(("http://", "https://")) else
                                  a.replace(f".staging-{prepared.name}", prepared.name) for a in argv]
                                 for argv, _ in prepared.commands]},
        "scenario": scenario.to_dict(),
        "versions": {"lightrail": __version__, **plan.versions},
        "git": git_state(),
        "started": prepared.started.isoformat(), "ended": ended.isoformat(),
        "client": {"host": platform.node(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""
    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}
