"""How fast can the default harness (`vllm bench serve`) drive load from this machine?

Starts a real vLLM on CPU with the tiny generated model (so the server is as cheap as it gets),
then offers rising request rates and reports, per rate: the achieved request rate, TTFT and
end-to-end latency, and how much CPU the harness and the server used. The harness "sustains"
a rate when it achieves >= 95 % of it; above that, results measure the 2-core machine (client
and server share it), not the deployment.

    .venv/bin/python benchmarks/harness_capacity.py [--requests 256] [--rates 16,32,64,128,256,inf]
"""
from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

import psutil

from lightrail.bench import scenarios, vllm_serve
from lightrail.bench.harnesses import Target, execute
from lightrail.testing.tinymodel import generate
from lightrail.testing.vllm import VLLMServer

MODEL = "Qwen/Qwen2.5-3B-Instruct"


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its children (the server runs its engine in a child)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def harness_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256, help="requests per rate")
    parser.add_argument("--rates", default="16,32,64,128,256,inf", help="offered request rates, comma-separated")
    args = parser.parse_args()
    rates = [r.strip() for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="lightrail-capacity-"))
    model = generate(work / "model")
    scenario = scenarios.parse("capacity", {"dataset": "random", "input_len": 64, "output_len": 16,
                                            "requests": args.requests,
                                            "sweep": {"request_rate": [r if r == "inf" else float(r) for r in rates]}})
    rows = []
    with VLLMServer(model, MODEL) as server:
        target = Target(server.url, (MODEL,), str(model))
        for i, load in enumerate(scenario.points):
            out = work / f"point-{i:02d}"
            out.mkdir()
            argv, _ = vllm_serve.command(scenario, load, target, out)
            h0, s0, t0 = harness_cpu(), cpu_seconds(server.proc.pid), time.perf_counter()
            execute(argv, out / "harness.log", timeout=900, offline=True)
            h1, s1, t1 = harness_cpu(), cpu_seconds(server.proc.pid), time.perf_counter()
            p = vllm_serve.parse(out)
            rows.append((load.request_rate, p, h1 - h0, s1 - s0, t1 - t0))
            print(f"rate {load.request_rate}: {p['throughput']['requests_per_s']:.1f} req/s achieved", flush=True)
    print("\n| offered req/s | achieved req/s | achieved/offered | TTFT p50 / p99 ms | E2E p50 / p99 ms "
          "| output tok/s | load s | harness process s | harness CPU s | server CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate, p, h_cpu, s_cpu, wall in rows:
        achieved = p["throughput"]["requests_per_s"]
        ratio = "n/a" if math.isinf(rate) else f"{achieved / rate:.0%}"
        lat = p["latency_ms"]
        print(f"| {rate:g} | {achieved:.1f} | {ratio} | {lat['ttft']['p50']:.1f} / {lat['ttft']['p99']:.1f} "
              f"| {lat['e2e']['p50']:.1f} / {lat['e2e']['p99']:.1f} | {p['throughput']['output_tokens_per_s']:.0f} "
              f"| {p['duration_s']:.1f} | {wall:.1f} | {h_cpu:.1f} | {s_cpu:.1f} |")
    sustained = [rate for rate, p, *_ in rows if not math.isinf(rate) and p["throughput"]["requests_per_s"] >= 0.95 * rate]
    print(f"\nhighest offered rate achieved within 5 %: {max(sustained):g} req/s" if sustained else "\nno rate sustained")


if __name__ == "__main__":
    main()
