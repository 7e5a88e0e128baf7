"""What the migration learns from requests of its own through the Gateway (each side's probe rule,
or the client rules) and from the target's pods: verify, warm, the source's baseline, the holds."""
from __future__ import annotations

import statistics

import httpx

from lightrail.errors import LightrailError
from lightrail.migrate import gatewaymetrics, guards, retire
from lightrail.migrate.context import Context
from lightrail.migrate.plan import Migration, Op
from lightrail.migrate.preflight import target_selector
from lightrail.migrate.routes import PROBE_HEADER, client_prefix, pool_name
from lightrail.migrate.state import State
from lightrail.smoke import checks as smoke

PROBE_INTERVAL = 1.0     # seconds between guard probes during a hold
WARM_PROMPTS = 8         # generic warm-up requests, without --warm-prompts
WARM_PREFIX = "You are a helpful assistant. Answer briefly and precisely. " * 40
VERIFY_GRACE = 30.0      # seconds a new side may answer 503 (no endpoint the gateway knows yet) before verify fails


def reachable(m: Migration, ctx: Context) -> None:
    """Any HTTP answer from --url (a 404 too), and the gateway's counters at --metrics-url, before anything
    changes: a wrong address or an untrusted certificate is refused now, not after the target was deployed."""
    try:
        httpx.get(f"{ctx.url}/", timeout=30, verify=ctx.trust)
    except httpx.HTTPError as err:
        raise LightrailError(f"the Gateway does not answer at --url={smoke.mask_url(ctx.url)}: {smoke.describe(err)}; "
                             "nothing was changed") from None
    try:
        _client_counts(m, ctx)
    except LightrailError as err:
        raise LightrailError(f"{err.message}; nothing was changed", fix=err.fix) from None


def baseline(m: Migration, ctx: Context, n: int = 5) -> float:
    """The source's median probe latency, which the holds' latency guard compares the target with."""
    samples = [_probe(m, "source", ctx, k) for k in range(n)]
    ok = [s.seconds for s in samples if s.ok]
    if not ok:
        raise LightrailError(f"the source does not answer through its probe rule: {samples[-1].detail}",
                             fix=f"check --url={smoke.mask_url(ctx.url)} reaches Gateway {m.gateway[0]}/{m.gateway[1]}")
    ctx.out(f"    source baseline: median {statistics.median(ok) * 1000:.0f} ms over {len(ok)} probe(s)")
    return statistics.median(ok)


def verify(m: Migration, side: str, ctx: Context) -> None:
    """Completion, chat and streaming through the side's probe rule, each from the right model; or
    ("clients") as clients call each model, which takes the target once the source is gone: what
    the probe rules cannot see (the client rules, the router that fills their model header)."""
    ctx.out(f"- verify the {side} through " + ("the client rules" if side == "clients" else "its probe rule"))
    plan = m.target if side == "clients" else m.side(side)
    for server, source in zip(plan.servers, m.source.servers):
        model = plan.client_model(server)
        base = client_prefix(list(m.rules[source.name])) if side == "clients" else ""
        with _client(ctx, side, base) as client:
            for probe in (smoke.completion, smoke.chat, smoke.streaming):
                check = probe(client, model)
                deadline = ctx.clock() + VERIFY_GRACE
                while not check.ok and "HTTP 503" in check.got and ctx.clock() < deadline:
                    ctx.sleep(1)      # no ready endpoint yet, as the gateway sees it: it learns new pods late
                    check = probe(client, model)
                ctx.out(f"    {'ok  ' if check.ok else 'FAIL'}  {check.name}  {check.latency_ms:.0f} ms  {check.got}")
                if not check.ok:
                    who = "clients' requests" if side == "clients" else f"the {side}"
                    raise LightrailError(f"{who} failed {check.name}: expected {check.expected}, got {check.got}")


def warm(m: Migration, ctx: Context) -> None:
    """Requests the target's prefix caches keep, before clients reach it: the --warm-prompts (the
    prefixes clients share), else generic prompts sharing a long prefix."""
    given = m.options.warm_prompts
    prompts = given or tuple(f"{WARM_PREFIX}\nQuestion {i}:" for i in range(WARM_PROMPTS))
    ctx.out(f"- warm the target's prefix cache ({len(prompts)} request(s) per model through its probe rule"
            + (", the prompts of --warm-prompts)" if given else ")"))
    with _client(ctx, "target") as client:
        for server in m.target.servers:
            for prompt in prompts:
                body = {"model": m.target.client_model(server), "prompt": prompt, "max_tokens": 1}
                resp = client.post("/v1/completions", json=body)
                if resp.status_code != 200:
                    raise LightrailError(f"warming the target failed: HTTP {resp.status_code}")


def await_endpoints(m: Migration, op: Op, ctx: Context) -> None:
    """Every target replica ready before it is verified or gets weight. A stack's own readiness can
    come sooner: KServe's is its Deployment's Available condition, true while a replica still starts;
    the holds' readiness guard would then trip on a target that was only slow."""
    end = ctx.clock() + m.options.timeout
    with ctx.progress("target endpoints") as update:
        while (counts := _ready_endpoints(m, ctx, op.replicas))[0] < counts[1]:
            if ctx.clock() >= end:
                raise LightrailError(f"only {counts[0]} of {counts[1]} target endpoint(s) ready after "
                                     f"{m.options.timeout:.0f} s", fix="see why with `kubectl get pods` and "
                                     f"`kubectl describe pod` in namespace {m.namespace}")
            update(f"{counts[0]}/{counts[1]} ready, {end - ctx.clock():.0f} s left")
            ctx.sleep(1.0)
    ctx.out(f"    target endpoints ready: {counts[0]}/{counts[1]}")


def hold(m: Migration, op: Op, ctx: Context, state: State | None) -> None:
    """Keep the weight for op.seconds while probing the target; trip on the first bad verdict."""
    ctx.out(f"- {op.title}")
    samples: list[guards.Sample] = []
    start = ctx.clock()
    limits = guards.Limits(latency_margin=m.options.latency_margin)
    limit = f" (limit {guards.latency_limit(ctx.baseline, limits) * 1000:.0f} ms)" if ctx.baseline else ""

    watch = gatewaymetrics.HoldWatch()

    def summary(ready: int, desired: int, clients: dict | None) -> str:
        mid = guards.median(samples)
        seen = f", clients: source {clients['source']}, target {clients['target']}" if clients else ""
        return (f"target {op.weight}%, {ctx.clock() - start:.0f}/{op.seconds:.0f} s, probes {len(samples)} ok, median "
                f"{(mid or 0) * 1000:.0f} ms{limit}, ready {ready}/{desired}{seen}")

    with ctx.progress(f"{state.phase if state else 'hold'}") as update:
        while True:
            samples.append(_probe(m, "target", ctx, len(samples)))
            ready, desired = _ready_endpoints(m, ctx, op.replicas)
            if ctx.metrics_url:
                watch.read(lambda: _client_counts(m, ctx))
            clients = watch.clients
            reason = guards.verdict(samples, ctx.baseline, ready, desired, limits, clients and clients["target"],
                                    watch.unread, watch.error)
            if reason:
                raise guards.GuardTripped(reason)
            update(summary(ready, desired, clients))
            if ctx.clock() - start >= op.seconds and watch.settled:
                ctx.out(f"    {summary(ready, desired, clients)}")
                return
            ctx.sleep(PROBE_INTERVAL)


def _client_counts(m: Migration, ctx: Context) -> dict[str, gatewaymetrics.Counts] | None:
    """Requests per side the Gateway has counted (--metrics-url), or None without it."""
    if not ctx.metrics_url:
        return None
    try:
        resp = httpx.get(ctx.metrics_url, timeout=10, verify=ctx.trust)
        resp.raise_for_status()
    except httpx.HTTPError as err:
        raise LightrailError(f"the gateway metrics do not answer at --metrics-url={smoke.mask_url(ctx.metrics_url)}: "
                             f"{smoke.describe(err)}", fix="is the port-forward to the gateway proxy still running?") \
            from None
    pools = {side: [pool_name(m.side(side), s) for s in m.side(side).servers] for side in ("source", "target")}
    return gatewaymetrics.per_side(resp.text, m.namespace, pools)


def _client(ctx: Context, side: str, prefix: str = "") -> httpx.Client:
    """Requests through the Gateway: a side's probe rule, or (side "clients") the client rules under `prefix`."""
    return httpx.Client(base_url=ctx.url + prefix, headers={} if side == "clients" else {PROBE_HEADER: side},
                        timeout=60, verify=ctx.trust)


def _probe(m: Migration, side: str, ctx: Context, k: int = 0) -> guards.Sample:
    """One completion through the side's probe rule, to its k-th model (in turn: multimodel)."""
    plan = m.side(side)
    server = plan.servers[k % len(plan.servers)]
    with _client(ctx, side) as client:
        try:
            check = smoke.completion(client, plan.client_model(server))
        except httpx.HTTPError as err:
            return guards.Sample(False, 0.0, f"{type(err).__name__}: {err}")
    return guards.Sample(check.ok, check.latency_ms / 1000, "" if check.ok else f"{check.got}")


def _ready_endpoints(m: Migration, ctx: Context, replicas: int = 0) -> tuple[int, int]:
    """Ready target pods in its pools, and how many there should be (`replicas` per model; 0: the plan's)."""
    ready_now = desired = 0
    for server in m.target.servers:
        sel = ",".join(f"{k}={v}" for k, v in target_selector(m, server).items())
        pods = ctx.cluster.list("v1", "Pod", m.namespace, sel)
        ready_now += sum(1 for p in pods if retire.live(p) and retire.ready(p))
        desired += replicas or server.replicas
    return ready_now, desired
