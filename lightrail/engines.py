"""Inference engines besides vLLM, from patterns/engines.yaml: checks, command lines, metric maps.

Engines are catalog data: this module only reads an entry, refuses what upstream cannot run
(with the reason), and fills the entry's templates. The plan calls it; stacks read its results.
"""
from __future__ import annotations

from typing import Any, Mapping

from lightrail.catalog import Catalog
from lightrail.errors import LightrailError, choose

DEFAULT = "vllm"
ENGINE_LABEL = "llm-d.ai/engine-type"   # llm-d-router v0.10.0 core-metrics-extractor's default engineLabelKey
SIM_REASON = "the simulator imitates vLLM (its API and vllm:* metrics); use --inference-engine=vllm with --accel=sim"
TPU_REASON = "TPU serving is vLLM TPU (tpu-inference) only"


def engine(catalog: Catalog, name: str) -> Mapping[str, Any]:
    """The catalog entry of an engine, or an error naming the valid ones (and why a known one is refused)."""
    engines = catalog.engines
    offered = [n for n, e in engines.items() if "refused" not in e]
    if name in engines and "refused" in engines[name]:
        raise LightrailError(f"--inference-engine={name} is refused: {engines[name]['refused']}",
                             fix=f"valid: {', '.join(offered)}")
    choose("inference engine", name, offered)
    return engines[name]


def check(catalog: Catalog, name: str, pattern, accel: str, stack: str, extra_args: tuple[str, ...],
          kserve_tls: bool) -> Mapping[str, Any]:
    """Refuse engine x pattern x accelerator x stack cells upstream cannot run, with the reason."""
    spec = engine(catalog, name)
    if name == DEFAULT:
        return spec
    where = f"--inference-engine={name}"
    if accel == "sim":
        raise LightrailError(f"{where} with --accel=sim is refused: {SIM_REASON}")
    if accel == "tpu":
        raise LightrailError(f"{where} with --accel=tpu is refused: {TPU_REASON}",
                             fix=f"valid accelerators for {name}: {', '.join(spec['accelerators'])}")
    if accel not in spec["accelerators"]:
        raise LightrailError(f"{where} does not run on --accel={accel}; valid: {', '.join(spec['accelerators'])}")
    reason = spec["stacks"].get(stack, f"no {stack} support")
    if reason:
        raise LightrailError(f"{where} with --stack={stack} is refused: {reason}")
    if pattern.multinode:
        raise LightrailError(f"{where} with pattern {pattern.name!r} is refused: its LeaderWorkerSet layout starts "
                             "vLLM data-parallel ranks (--data-parallel-*); valid patterns: baseline, multimodel, caching")
    if extra_args:
        raise LightrailError(f"--vllm-arg is for --inference-engine=vllm (checked with vLLM's parser); got {where}")
    if stack == "kserve" and kserve_tls:
        raise LightrailError(f"{where} with KServe's TLS on (LIGHTRAIL_KSERVE_TLS=1) is refused: KServe's presets "
                             "give only vLLM its certificate flags; valid: LIGHTRAIL_KSERVE_TLS=0")
    for flag in pattern.vllm_args:
        if flag.split("=", 1)[0] not in spec.get("pattern_args", {}):
            raise LightrailError(f"{where} cannot run pattern {pattern.name!r}: no equivalent of {flag}")
    return spec


def model_swap(spec: Mapping[str, Any], model: str) -> str:
    """The engine's form of a catalog model (llama.cpp loads the GGUF repository of the same model)."""
    return spec.get("models", {}).get(model, model)


def pattern_args(spec: Mapping[str, Any], args: tuple[str, ...]) -> list[str]:
    """The pattern's vLLM flags in the engine's words (check() refused any without an equivalent)."""
    out = []
    for arg in args:
        flag, _, value = arg.partition("=")
        template = spec["pattern_args"][flag]
        if template:
            out.append(template.format(value=value))
    return out


def command_line(spec: Mapping[str, Any], accel: str, *, model: str, ref: str, ref_kind: str, port: int,
                 tp: int, args: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Command and args of a non-vLLM server: what to load (`ref`, a Hugging Face id or a path), the
    served name, the port, tensor parallelism and the pattern's flags."""
    if tp > 1 and not spec.get("tensor_parallel"):
        raise LightrailError(f"{spec['summary']} runs on one accelerator here (tensor-parallel size {tp} asked); "
                             "valid: --replicas for more, one GPU per pod")
    fill = {"model": model, "port": port, "ref": ref, "tp": tp}
    argv = [a.format(**fill) for a in spec["load"][ref_kind]] + [a.format(**fill) for a in spec["args"]]
    argv += [a for a in spec["accelerators"][accel].get("args", ())]
    if tp > 1:
        argv.append(spec["tensor_parallel"].format(**fill))
    argv += pattern_args(spec, args)
    return tuple(spec["command"]), tuple(argv)


def metrics_extractor(spec: Mapping[str, Any]) -> dict:
    """The EPP's core-metrics-extractor plugin for this engine: its built-in map by name, or the
    map itself (`engineConfigs`) when llm-d-router has none."""
    plugin: dict = {"type": "core-metrics-extractor"}
    if spec["epp_engine"] == DEFAULT:
        return plugin
    params: dict = {"defaultEngine": spec["epp_engine"]}
    if not spec["builtin"]:
        m = spec["metrics"]
        params["engineConfigs"] = [{"name": spec["epp_engine"], "queuedRequestsSpec": m["queued"],
                                    "runningRequestsSpec": m["running"], "kvUsageSpec": m["kv_usage"]}]
    plugin["parameters"] = params
    return plugin
