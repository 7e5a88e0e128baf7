"""How long a full smoke of one pattern takes against a local vLLM that is already up.

    .venv/bin/python benchmarks/smoke_speed.py [--runs 5]

Starts one real vLLM (tiny generated model, CPU) — not timed — then times `invoke smoke`'s
checks for baseline and caching, and for multimodel behind a body router with a second server.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightrail.smoke import checks  # noqa: E402
from lightrail.testing.bodyrouter import BodyRouter  # noqa: E402
from lightrail.testing.tinymodel import generate  # noqa: E402
from lightrail.testing.vllm import VLLMServer  # noqa: E402

QWEN, PHI = "Qwen/Qwen2.5-3B-Instruct", "microsoft/Phi-3-mini-4k-instruct"


def timed(runs, **kwargs):
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        report = checks.run(timeout=60, **kwargs)
        seconds.append(time.perf_counter() - start)
        assert report.ok, [c for c in report.checks if not c.ok]
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = generate(Path(tmp) / "tiny")
        with VLLMServer(model, QWEN) as qwen, VLLMServer(model, PHI) as phi, \
                BodyRouter({QWEN: qwen.url, PHI: phi.url}) as router:
            out = {
                "baseline": timed(args.runs, url=qwen.url, pattern="baseline", models=[QWEN],
                                  metrics_urls=[qwen.metrics_url], prefix_check="auto"),
                "caching": timed(args.runs, url=qwen.url, pattern="caching", models=[QWEN],
                                 metrics_urls=[qwen.metrics_url], prefix_check="required"),
                "multimodel": timed(args.runs, url=router.url, pattern="multimodel", models=[QWEN, PHI],
                                    metrics_urls=[qwen.metrics_url, phi.metrics_url], prefix_check="auto"),
            }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
