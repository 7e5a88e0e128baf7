"""`invoke smoke`: real requests through the endpoint a pattern is served on."""
from __future__ import annotations

import json

from invoke import Exit, task
from rich.console import Console
from rich.table import Table

from lightrail.cli import user_errors
from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.smoke import checks
from lightrail.smoke.runner import smoke_plan


def print_report(report: checks.Report) -> None:
    console = Console()
    table = Table(title=f"smoke: {report.pattern} at {report.url}")
    for col in ("check", "result", "latency", "detail"):
        table.add_column(col)
    for c in report.checks:
        result = "[green]pass[/]" if c.ok else "[red]FAIL[/]"
        detail = c.detail if c.ok else f"expected {c.expected}; got {c.got}" + (f" ({c.detail})" if c.detail else "")
        table.add_row(c.name, result, f"{c.latency_ms:.0f} ms", detail)
    console.print(table)
    failed = [c.name for c in report.checks if not c.ok]
    console.print("[green]all checks passed[/]" if not failed else f"[red]{len(failed)} failed:[/] {', '.join(failed)}")


@task(
    help={
        "pattern": "the pattern the deployment runs: baseline | multimodel | caching | moe",
        "stack": "llmd | kserve (for discovery and the pattern's models)",
        "accel": "gpu | tpu | cpu | sim (the accelerator decides the default models; default gpu)",
        "model": "a served model name to expect instead of the pattern's (repeatable)",
        "namespace": "namespace of the deployment (discovery)",
        "kube_context": "kube context for discovery (default: the current one)",
        "url": "OpenAI-compatible base URL; skips discovery (a gateway, a local vLLM, a tunnel)",
        "metrics_url": "a model server's /metrics URL for the prefix-cache check (repeatable; "
                       "default: URL/metrics with --url, else the model-server pods)",
        "json_": "print one JSON document instead of a table",
        "timeout": "seconds to wait for the first answer, and for each request (default 60)",
    },
    iterable=["model", "metrics_url"],
)
@user_errors
def smoke(c, pattern="", stack="llmd", accel="gpu", model=None, namespace="lightrail", kube_context="",
          url="", metrics_url=None, json_=False, timeout="60"):
    """Send real completions through the endpoint and check the pattern is really served."""
    seconds = _seconds(timeout)
    plan = build_plan(Request(pattern=pattern, accel=accel, stack=stack, namespace=namespace,
                              models=tuple(model or ())))
    report = smoke_plan(plan, url=url, metrics_urls=tuple(metrics_url or ()), kube_context=kube_context or None,
                        timeout=seconds)
    if json_:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if not report.ok:
        raise Exit(code=1)


def _seconds(value: str) -> float:
    """--timeout as seconds (a string flag: invoke would crash on `--timeout=1.5` for an int one)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise LightrailError(f"--timeout must be a positive number of seconds, got {value!r}")
    return seconds
