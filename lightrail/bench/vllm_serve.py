"""Adapter for `vllm bench serve` (the default harness; ships with vLLM and its images).

Random prompts use its `random` dataset; shared prefixes its `prefix_repetition` dataset; a
multi-model mix sends requests round-robin over the served names with `--lora-modules` (which
only sets each request's `model` field, exactly what a body-based router routes on).
"""
from __future__ import annotations

import json
import math
import sys
from importlib import metadata
from pathlib import Path

from lightrail.bench import summary
from lightrail.bench.harnesses import Target
from lightrail.bench.scenarios import Load, Scenario
from lightrail.errors import LightrailError

RESULT = "result.json"


def bench_args(scenario: Scenario, load: Load, target: Target, out_dir: str) -> list[str]:
    """Arguments of `vllm bench serve` (the same locally and in the cluster's vLLM image)."""
    models = target.models_for(scenario.models)
    args = ["--backend", "openai", "--base-url", target.url, "--endpoint", "/v1/completions",
            "--model", models[0], "--tokenizer", target.tokenizer,
            "--num-prompts", str(scenario.requests), "--seed", str(load.seed),
            "--request-rate", "inf" if math.isinf(load.request_rate) else f"{load.request_rate:g}",
            "--ignore-eos", "--temperature", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--save-detailed", "--result-dir", out_dir, "--result-filename", RESULT,
            "--disable-tqdm"]
    if load.max_concurrency:
        args += ["--max-concurrency", str(load.max_concurrency)]
    if scenario.dataset == "shared-prefix":
        args += ["--dataset-name", "prefix_repetition",
                 "--prefix-repetition-prefix-len", str(scenario.prefix_len),
                 "--prefix-repetition-suffix-len", str(scenario.input_len),
                 "--prefix-repetition-num-prefixes", str(scenario.num_prefixes),
                 "--prefix-repetition-output-len", str(scenario.output_len)]
    else:
        args += ["--dataset-name", "random", "--random-input-len", str(scenario.input_len),
                 "--random-output-len", str(scenario.output_len), "--random-range-ratio", f"{scenario.range_ratio:g}"]
    if len(models) > 1:
        args += ["--lora-modules", *models, "--lora-assignment", "round-robin"]
    return args


def command(scenario: Scenario, load: Load, target: Target, out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """argv to run locally, and the input files it needs (none)."""
    return [sys.executable, "-m", "lightrail.bench.vllm_bench", *bench_args(scenario, load, target, str(out_dir))], {}


def version() -> str:
    dist = (metadata.packages_distributions().get("vllm") or ["vllm"])[0]
    return f"{dist} {metadata.version(dist)}"


def parse(out_dir: Path) -> dict:
    path = Path(out_dir) / RESULT
    if not path.exists():
        raise LightrailError(f"vllm bench serve wrote no result ({path} is missing)")
    return from_result(json.loads(path.read_text()))


def from_result(raw: dict) -> dict:
    """A summary point from vllm bench serve's result JSON (saved with --save-detailed)."""
    names = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2el"}
    latency = {ours: {"mean": raw.get(f"mean_{theirs}_ms"), **{p: raw.get(f"{p}_{theirs}_ms") for p in summary.PERCENTILES}}
               for ours, theirs in names.items()}
    errors = [e for e in raw.get("errors") or [] if e]
    return summary.point(ok=raw["completed"], failed=raw.get("failed", len(errors)),
                         input_tokens=raw["total_input_tokens"], output_tokens=raw["total_output_tokens"],
                         duration_s=raw["duration"], latency_ms=latency,
                         first_error=errors[0].strip().splitlines()[-1][:300] if errors else None)
