"""What a migration costs the clients: wall time, requests served, latency before / during / after.

    .venv/bin/python benchmarks/migration.py [--pattern=caching|baseline|multimodel] [--steps=10,50,100 | --no-surge]
                                             [--hold=10] [--window=30] [--shared-prefix [--warm-prompts]]

On the local control plane (real API server, scheduler, istiod, KServe controller, kwok nodes) the
pattern is deployed on llmd (sim node shapes), the Gateway is served by the gateway model with one
real vLLM per stack's pool, and a bounded-rate traffic driver runs throughout: `--window` seconds
before, `invoke migrate --to=kserve` itself, `--window` seconds after. Prints one line per window
(requests, failed, p50 / p99 latency) and the migration's wall time. The target's vLLM starts
cache-cold, so caching's p99 during and after shows the cold-cache cost the warm-up phase reduces.
`--no-surge` swaps one replica at a time instead (the weights follow the replicas; --steps unused).
multimodel: one vLLM per model and stack, the gateway model routing by the body, one traffic
driver per model (the rate is per model). The migration reads the gateway model's counters
(--metrics-url), so each hold's line shows the client requests per side.
`--shared-prefix`: every client prompt starts with one long system prompt (~1,000 tokens), as
clients of a caching deployment do; `--warm-prompts` hands that prompt to the migration to warm the
target with. Also printed: the first requests the target served, and the share of their prompt
tokens the target's vLLM found in its prefix cache during the migration (the cold-cache effect).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightrail.ops import controllers, kwok
from lightrail.render import to_yaml
from lightrail.settings import ROOT
from lightrail.smoke import metrics
from lightrail.testing.gateway import GatewayModel
from lightrail.testing.localcluster import LocalCluster
from lightrail.testing.tinymodel import generate
from lightrail.testing.traffic import PROMPTS, TrafficDriver
from lightrail.testing.vllm import VLLMServer

SYSTEM = ("You are the on-call assistant of a platform team. Answer in one short paragraph, cite the runbook "
          "section you used, and never guess a command you have not seen in the runbook. ") * 12
FIRST = 20     # the target's first requests, whose latency shows a cold or warm cache
MODELS = {"qwen2-5-3b-instruct": "Qwen/Qwen2.5-3B-Instruct", "phi-3-mini-4k-instruct": "microsoft/Phi-3-mini-4k-instruct"}
NAMESPACE = "bench-migrate"


def invoke(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=cluster.env, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode not in (0,) and args[0] != "prereqs":
        raise SystemExit(f"invoke {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return proc


def window(records, start: float, end: float) -> dict:
    inside = [r for r in records if start <= r.start < end]
    times = sorted(r.end - r.start for r in inside if r.ok)
    pct = (lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000) if times else (lambda q: float("nan"))
    return {"requests": len(inside), "failed": sum(not r.ok for r in inside),
            "p50_ms": round(pct(0.5), 1), "p99_ms": round(pct(0.99), 1),
            "mean_ms": round(statistics.mean(times) * 1000, 1) if times else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="caching", choices=["baseline", "caching", "multimodel"])
    parser.add_argument("--steps", default="10,50,100")
    parser.add_argument("--hold", default="10")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=6.0)
    parser.add_argument("--no-surge", action="store_true", help="one replica at a time (docs/migrate.md)")
    parser.add_argument("--shared-prefix", action="store_true", help="client prompts share a long system prompt")
    parser.add_argument("--warm-prompts", action="store_true", help="warm the target with that system prompt")
    args = parser.parse_args()
    prompts = tuple(f"{SYSTEM}\nQuestion {i}: {q}" for i, q in enumerate(PROMPTS)) if args.shared_prefix else PROMPTS
    models = MODELS if args.pattern == "multimodel" else dict(list(MODELS.items())[:1])
    pools = {(f"{args.pattern}-{short}{suffix}", model) for short, model in models.items()
             for suffix in ("", "-inference-pool")}      # llmd's pool, KServe's pool
    with tempfile.TemporaryDirectory(prefix="lightrail-bench-migrate-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster("bench-migrate", work / "cluster").start()
        try:
            cluster.kubectl("apply", "--server-side", "-f", "-", stdin=to_yaml(kwok.node_objects(kwok.parse_nodes("cpu:8"))))
            invoke(cluster, "prereqs", "--local-crds")
            with controllers.running("istio", cluster.kubeconfig, work / "istiod"), \
                    controllers.running("kserve", cluster.kubeconfig, work / "kserve"):
                cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(controllers.KSERVE_INGRESS_GATEWAY))
                invoke(cluster, "deploy", f"--pattern={args.pattern}", "--accel=sim", f"--namespace={NAMESPACE}",
                       "--timeout=600")
                model_dir = generate(work / "model")
                servers = {pool: VLLMServer(model_dir, model, startup_timeout=900)
                           for pool, model in sorted(pools)}
                with ThreadPoolExecutor(2) as pool:
                    for future in [pool.submit(s.start) for s in servers.values()]:
                        future.result()
                try:
                    backends = {(NAMESPACE, name): s.url for name, s in servers.items()}
                    router = (NAMESPACE, f"{args.pattern}-bbr") if args.pattern == "multimodel" else None
                    with contextlib.ExitStack() as running:
                        gw = running.enter_context(GatewayModel(
                            cluster.kubeconfig, cluster.context, (NAMESPACE, f"{args.pattern}-gateway"), backends,
                            propagation_delay=1.0, body_router=router))
                        drivers = [running.enter_context(TrafficDriver(gw.url, model, rate=args.rate, concurrency=8,
                                                                       max_tokens=8, prompts=prompts))
                                   for model in models.values()]
                        warm = []
                        if args.warm_prompts:
                            (work / "prompts.jsonl").write_text(json.dumps({"prompt": SYSTEM}) + "\n")
                            warm = [f"--warm-prompts={work / 'prompts.jsonl'}"]
                        targets = [f"{s.url}/metrics" for name, s in servers.items() if name.endswith("-inference-pool")]
                        t0 = time.monotonic()
                        time.sleep(args.window)
                        t1 = time.monotonic()
                        cache_before = metrics.scrape(targets)
                        moved = invoke(cluster, "migrate", f"--pattern={args.pattern}", "--accel=sim", "--to=kserve",
                                       f"-n={NAMESPACE}", f"--url={gw.url}", f"--metrics-url={gw.metrics_url}",
                                       f"--hold={args.hold}", "--settle=2", "--drain=5", "--timeout=600", "--yes",
                                       *(["--no-surge"] if args.no_surge else [f"--steps={args.steps}"]), *warm)
                        t2 = time.monotonic()
                        cache = metrics.delta(cache_before, metrics.scrape(targets))
                        time.sleep(args.window)
                        t3 = time.monotonic()
                    records = [r for d in drivers for r in d.report().records]
                finally:
                    for s in servers.values():
                        s.stop()
        finally:
            cluster.stop()
    how = "--no-surge" if args.no_surge else f"steps {args.steps}"
    print(f"migrate {args.pattern} llmd -> kserve, {how}, hold {args.hold} s: wall time {t2 - t1:.1f} s")
    for line in moved.stdout.splitlines():
        if "clients: " in line:
            print(f"  hold: {line.strip()}")
    for label, (a, b) in (("before", (t0, t1)), ("during", (t1, t2)), ("after", (t2, t3))):
        print(f"  {label:<7} {json.dumps(window(records, a, b))}")
    first = sorted((r for r in records if r.backend and r.backend.endswith("-inference-pool")), key=lambda r: r.start)
    first = first[:FIRST]
    if first:
        print(f"  the target's first {len(first)} client requests: {json.dumps(window(first, first[0].start, t3))}")
    queries = cache.get(metrics.PREFIX_QUERIES, 0.0)
    print(f"  the target's prefix cache during the migration: {cache.get(metrics.PREFIX_HITS, 0.0):.0f} of "
          f"{queries:.0f} prompt tokens hit" + (f" ({100 * cache[metrics.PREFIX_HITS] / queries:.1f} %)" if queries else "")
          + (", warmed with --warm-prompts" if args.warm_prompts else ""))


if __name__ == "__main__":
    main()
