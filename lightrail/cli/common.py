"""Flags shared by every task that builds a plan (plan, render, deploy, smoke, bench...)."""
from __future__ import annotations

from lightrail.errors import LightrailError
from lightrail.plan import MAX_REPLICAS, Request
from lightrail.settings import kserve_tls

PLAN_HELP = {
    "pattern": "baseline | multimodel | caching | moe",
    "accel": "gpu | tpu | cpu | sim",
    "stack": "llmd (Gateway API + llm-d, helmfile) | kserve (KServe LLMInferenceService, kustomize)",
    "model": "model to serve instead of the pattern's (org/name or /local/path); repeat for multimodel",
    "replicas": "replicas per model (default: the pattern's)",
    "namespace": "Kubernetes namespace (default: lightrail)",
    "gpu_type": "NVIDIA GPU type for --accel=gpu: t4 | l4 | a100 | a100-80gb | h100",
    "topology": "TPU v6e topology for --accel=tpu: 1x1 | 2x2 | 2x4 (one host; multi-host 4x4 | 4x8 are refused)",
    "provider": "llmd gateway provider: istio | gke | agentgateway (default istio)",
    "kserve_api": "LLMInferenceService API version for --stack=kserve: v1alpha2 | v1alpha1",
    "vllm_arg": "extra vLLM flag, e.g. --vllm-arg=--max-model-len=8192 (repeatable)",
}
PLAN_ITERABLE = ["model", "vllm_arg"]


def make_request(pattern, accel, stack="llmd", model=(), replicas=None, namespace="lightrail",
                 gpu_type=None, topology=None, provider="istio", kserve_api="v1alpha2", vllm_arg=()) -> Request:
    """Turn raw flag values into a Request; the plan does the real checking."""
    if not pattern or not accel:
        raise LightrailError("--pattern and --accel are required (e.g. --pattern=baseline --accel=gpu)")
    if replicas not in (None, ""):
        try:
            replicas = int(replicas)
        except (TypeError, ValueError):
            raise LightrailError(f"replicas must be a whole number from 1 to {MAX_REPLICAS}, got {replicas!r}") from None
    else:
        replicas = None
    models = tuple(m for group in (model or ()) for m in str(group).split(",") if m)
    return Request(pattern=pattern, accel=accel, stack=stack, models=models, replicas=replicas,
                   namespace=namespace, gpu_type=gpu_type or None, topology=topology or None,
                   provider=provider, kserve_api=kserve_api, kserve_tls=stack == "kserve" and kserve_tls(),
                   extra_args=tuple(vllm_arg or ()))
