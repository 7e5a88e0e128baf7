"""Adapter for GuideLLM (vLLM project), an optional harness in its own venv (it pulls torch).

It reads one config file (its `run --config` scenario format): an `openai_http` backend on
/v1/completions, `synthetic_text` data (with a prefix bucket for shared prefixes), a
`constant` (rate) or `concurrent` profile and a `max_requests` constraint. Its JSON report
(milliseconds, seconds for request latency) is read back into a summary point.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lightrail.bench import harnesses, summary
from lightrail.bench.harnesses import Target
from lightrail.bench.scenarios import Load, Scenario
from lightrail.errors import LightrailError

CONFIG = "guidellm.json"
REPORT = "benchmarks.json"


def config(scenario: Scenario, load: Load, target: Target, out_dir: Path) -> dict:
    if len(target.models_for(scenario.models)) > 1:
        raise LightrailError(f"the guidellm adapter sends to one model; scenario {scenario.name!r} spreads "
                             "requests over several", fix="use --harness=vllm for multi-model scenarios")
    data = {"kind": "synthetic_text", "prompt_tokens": scenario.input_len, "output_tokens": scenario.output_len}
    if scenario.range_ratio:
        for key, length in (("prompt_tokens", scenario.input_len), ("output_tokens", scenario.output_len)):
            data[f"{key}_min"] = max(1, round(length * (1 - scenario.range_ratio)))
            data[f"{key}_max"] = round(length * (1 + scenario.range_ratio))
    if scenario.dataset == "shared-prefix":
        data.update(prefix_tokens=scenario.prefix_len, prefix_count=scenario.num_prefixes)
    if math.isinf(load.request_rate):
        profile = {"kind": "concurrent", "streams": [load.max_concurrency or scenario.requests]}
    else:
        profile = {"kind": "constant", "rate": [load.request_rate]}
    return {"spec": {
        "backend": {"kind": "openai_http", "target": target.url, "model": target.models[0],
                    "request_format": "/v1/completions"},
        "tokenizer": {"kind": "huggingface_auto", "model": target.tokenizer},
        "profile": profile,
        "data": [data],
        "constraints": [{"kind": "max_requests", "count": scenario.requests}],
        "seed": {"kind": "static", "value": load.seed},
        "outputs": [{"kind": "json", "path": str(Path(out_dir) / REPORT)}],
    }}


def command(scenario: Scenario, load: Load, target: Target, out_dir: Path) -> tuple[list[str], dict[str, str]]:
    cfg = config(scenario, load, target, out_dir)
    argv = [str(harnesses.executable("guidellm")), "run", "--config", str(Path(out_dir) / CONFIG),
            "--disable-console-interactive"]
    return argv, {CONFIG: json.dumps(cfg, indent=2)}


def version() -> str:
    return f"guidellm {harnesses.pinned('guidellm')['version']}"


def parse(out_dir: Path) -> dict:
    path = Path(out_dir) / REPORT
    if not path.exists():
        raise LightrailError(f"guidellm wrote no report ({path} is missing)")
    return from_report(json.loads(path.read_text()))


def from_report(report: dict) -> dict:
    """A summary point from guidellm's per-request records.

    Its aggregate `metrics` cover only the requests inside its measurement window (seen here:
    11 of 16), while every request reached the server; the records list them all.
    """
    if not report.get("benchmarks"):
        raise LightrailError("guidellm's report has no benchmark")
    bench = report["benchmarks"][0]
    reqs = bench.get("requests") or {}
    ok = reqs.get("successful") or []
    failed = (reqs.get("errored") or []) + (reqs.get("incomplete") or [])
    fields = {"ttft": ("time_to_first_token_ms", 1), "tpot": ("time_per_output_token_ms", 1),
              "itl": ("inter_token_latency_ms", 1), "e2e": ("request_latency", 1000)}
    latency = {ours: _sample_stats([r[f] * scale for r in ok if r.get(f) is not None])
               for ours, (f, scale) in fields.items()}
    first_error = next((str(r.get("info", {}).get("error") or r.get("error")) for r in failed), None)
    return summary.point(ok=len(ok), failed=len(failed),
                         input_tokens=sum(r.get("prompt_tokens") or 0 for r in ok),
                         output_tokens=sum(r.get("output_tokens") or 0 for r in ok),
                         duration_s=bench["duration"], latency_ms=latency, first_error=first_error)


def _sample_stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, **{p: None for p in summary.PERCENTILES}}
    return {"mean": float(np.mean(values)),
            **{p: float(np.percentile(values, int(p[1:]))) for p in summary.PERCENTILES}}


