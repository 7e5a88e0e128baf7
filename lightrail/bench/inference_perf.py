"""Adapter for inference-perf (kubernetes-sigs), an optional harness in its own Python 3.12 venv.

It reads one YAML config: the scenario becomes its `random` or `shared_prefix` data generator
and a `poisson` (rate) or `concurrent` (all at once, capped) load stage. Its summary report
(summary_lifecycle_metrics.json, seconds) is read back into a summary point.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from lightrail.bench import harnesses, summary
from lightrail.bench.harnesses import Target
from lightrail.bench.scenarios import Load, Scenario
from lightrail.errors import LightrailError

CONFIG = "inference-perf.yaml"
REPORT = "summary_lifecycle_metrics.json"


def config(scenario: Scenario, load: Load, target: Target, out_dir: Path) -> dict:
    if len(target.models_for(scenario.models)) > 1:
        raise LightrailError(f"the inference-perf adapter sends to one model; scenario {scenario.name!r} spreads "
                             "requests over several", fix="use --harness=vllm for multi-model scenarios")
    if scenario.dataset == "shared-prefix":
        data = {"type": "shared_prefix", "shared_prefix": {
            "num_groups": scenario.num_prefixes,
            "num_prompts_per_group": math.ceil(scenario.requests / scenario.num_prefixes),
            "system_prompt_len": scenario.prefix_len, "question_len": scenario.input_len,
            "output_len": scenario.output_len, "seed": load.seed}}
    else:
        data = {"type": "random", "input_distribution": _uniform(scenario.input_len, scenario),
                "output_distribution": _uniform(scenario.output_len, scenario)}
    if math.isinf(load.request_rate):
        stage = {"num_requests": scenario.requests, "concurrency_level": load.max_concurrency or scenario.requests}
        load_cfg = {"type": "concurrent", "stages": [stage]}
    else:
        duration = max(1, math.ceil(scenario.requests / load.request_rate))
        load_cfg = {"type": "poisson", "stages": [{"rate": load.request_rate, "duration": duration}]}
    return {
        "api": {"type": "completion", "streaming": True},
        "server": {"type": "vllm", "model_name": target.models[0], "base_url": target.url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": target.tokenizer},
        "data": data,
        "load": load_cfg,
        "storage": {"local_storage": {"path": str(out_dir)}},
        "report": {"request_lifecycle": {"summary": True, "per_stage": False, "percentiles": [50, 90, 99]}},
    }


def command(scenario: Scenario, load: Load, target: Target, out_dir: Path) -> tuple[list[str], dict[str, str]]:
    cfg = config(scenario, load, target, out_dir)
    argv = [str(harnesses.executable("inference-perf")), "--config_file", str(Path(out_dir) / CONFIG)]
    return argv, {CONFIG: yaml.safe_dump(cfg, sort_keys=False)}


def version() -> str:
    return f"inference-perf {harnesses.pinned('inference-perf')['version']}"


def parse(out_dir: Path) -> dict:
    path = Path(out_dir) / REPORT
    if not path.exists():
        raise LightrailError(f"inference-perf wrote no summary report ({path} is missing)")
    return from_report(json.loads(path.read_text()))


def from_report(report: dict) -> dict:
    ok, failures = report["successes"], report.get("failures") or {}
    names = {"ttft": "time_to_first_token", "tpot": "time_per_output_token", "itl": "inter_token_latency",
             "e2e": "request_latency"}
    latency = {ours: _ms((ok.get("latency") or {}).get(theirs) or {}) for ours, theirs in names.items()}
    labels = list((failures.get("by_label") or {}))
    return summary.point(ok=ok["count"], failed=failures.get("count", 0),
                         input_tokens=(ok.get("prompt_tokens") or {}).get("total", 0),
                         output_tokens=(ok.get("output_tokens") or {}).get("total", 0),
                         duration_s=report["benchmark_time_seconds"], latency_ms=latency,
                         first_error=labels[0] if labels else None)


def _uniform(length: int, scenario: Scenario) -> dict:
    low = max(1, round(length * (1 - scenario.range_ratio)))
    high = max(low, round(length * (1 + scenario.range_ratio)))
    return {"type": "uniform", "min": low, "max": high, "mean": length, "std_dev": 0, "total_count": scenario.requests}


def _ms(stats: dict) -> dict:
    pick = {"mean": stats.get("mean"), "p50": stats.get("median"), "p90": stats.get("p90"), "p99": stats.get("p99")}
    return {k: None if v is None else v * 1000 for k, v in pick.items()}
