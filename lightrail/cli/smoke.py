"""`invoke smoke`: real requests through the endpoint a pattern is served on."""
from __future__ import annotations

from invoke import Exit
from rich.markup import escape
from rich.table import Table

from lightrail.aliases import parse as parse_aliases
from lightrail.cli import command, user_errors
from lightrail.cli.common import models, seconds
from lightrail.cli.output import OUTPUT_HELP, console, emit, output_format, progress
from lightrail.plan import Request, build_plan
from lightrail.smoke import checks
from lightrail.smoke.runner import smoke_plan


def print_report(report: checks.Report) -> None:
    screen = console()
    table = Table(title=f"smoke: {report.pattern} at {report.url}")
    for col in ("check", "result", "latency", "detail"):
        table.add_column(col)
    for c in report.checks:
        result = "[green]pass[/]" if c.ok else "[red]FAIL[/]"
        detail = c.detail if c.ok else f"expected {c.expected}; got {c.got}" + (f" ({c.detail})" if c.detail else "")
        table.add_row(c.name, result, f"{c.latency_ms:.0f} ms", escape(detail))
    screen.print(table)
    failed = [c.name for c in report.checks if not c.ok]
    screen.print("[green]all checks passed[/]" if not failed else f"[red]{len(failed)} failed:[/] {', '.join(failed)}")


@command(
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
        "output": OUTPUT_HELP,
        "timeout": "seconds to wait for the first answer, and for each request (default 60)",
        "alias": "an alias the deployment serves, NAME=MODEL (repeatable): it must answer with MODEL's text",
        "ca_file": "PEM bundle of the CA that signed an https endpoint's certificate (a private CA, a "
                   "self-signed gateway); default: the system's CAs",
    },
    iterable=["model", "metrics_url", "alias"],
)
@user_errors
def smoke(c, pattern="", stack="llmd", accel="gpu", model=None, namespace="lightrail", kube_context="",
          url="", metrics_url=None, output="table", timeout="60", alias=None, ca_file=""):
    """Send real completions through the endpoint and check the pattern is really served."""
    fmt = output_format(output)
    limit = seconds(timeout)
    base = checks.check_url(url) if url else ""
    metrics = tuple(metrics_url or ())
    for m in metrics:
        checks.check_url(m, "--metrics-url")
    trust = checks.trust(ca_file)
    plan = build_plan(Request(pattern=pattern, accel=accel, stack=stack, namespace=namespace, models=models(model),
                              aliases=parse_aliases(alias)))
    with progress(f"waiting for {checks.mask_url(base) if base else 'the discovered endpoint'}") as update:
        report = smoke_plan(plan, url=base, metrics_urls=metrics, kube_context=kube_context or None, timeout=limit,
                            progress=update, trust=trust)
    if fmt == "table":
        print_report(report)
    else:
        emit(report.to_dict(), fmt)
    if not report.ok:
        raise Exit(code=1)
