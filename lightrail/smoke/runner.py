"""Smoke a plan: where to send requests (a URL or discovery), where to read metrics, which checks.

Shared by `invoke smoke` and `invoke deploy --smoke`, so both check the same things.
"""
from __future__ import annotations

import contextlib
import ssl
from typing import Callable

from lightrail.plan import Plan
from lightrail.smoke import checks
from lightrail.smoke.discovery import as_deployed, discover, server_metrics


def prefix_check(plan: Plan) -> str:
    """The prefix-cache check is required where the pattern turns vLLM prefix caching on (caching);
    elsewhere it is informational ("auto")."""
    return "required" if "--enable-prefix-caching" in plan.servers[0].args else "auto"


def smoke_plan(plan: Plan, *, url: str = "", metrics_urls: tuple[str, ...] = (), kube_context: str | None = None,
               timeout: float = 60.0, progress: Callable[[str], None] | None = None,
               trust: ssl.SSLContext | bool = True) -> checks.Report:
    """Run every check for the plan's pattern and models.

    No url: discover the endpoint. Metrics: the given URLs, else URL/metrics, else (discovered,
    caching only) the model-server pods; port-forwards are stopped before this returns.
    """
    prefix = prefix_check(plan)
    url = checks.check_url(url) if url else ""
    plan = plan if url else as_deployed(plan, kube_context)
    with contextlib.ExitStack() as stack:
        base = url or stack.enter_context(discover(plan, kube_context))
        if metrics_urls:
            metrics = list(metrics_urls)
        elif url:
            metrics = [f"{url}/metrics"]
        elif prefix == "required":
            metrics = stack.enter_context(server_metrics(plan, kube_context))
        else:
            metrics = []
        return checks.run(base, plan.pattern.name, list(plan.served_models), metrics_urls=metrics, timeout=timeout,
                          prefix_check=prefix, progress=progress, trust=trust,
                          aliases={a: s.model for s in plan.servers for a in s.aliases})
