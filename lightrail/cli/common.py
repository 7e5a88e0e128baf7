"""Flags shared by every task that builds a plan (plan, render, deploy, smoke, bench...), and their checks.

Every value is checked here or in the plan before a task does anything: no task starts acting on
input it will later refuse.
"""
from __future__ import annotations

import os
from pathlib import Path

from lightrail.aliases import parse as parse_aliases
from lightrail.catalog import STACKS
from lightrail.errors import LightrailError, choose
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
    "provider": "gateway provider for --stack=llmd: istio | gke | agentgateway (default istio)",
    "kserve_api": "LLMInferenceService API version for --stack=kserve: v1alpha2 | v1alpha1 (default v1alpha2)",
    "vllm_arg": "extra vLLM flag, e.g. --vllm-arg=--max-model-len=8192 (repeatable; checked with vLLM's own parser)",
    "pod_security": "Pod Security level the namespace enforces: restricted | baseline | privileged "
                    "(default: the strictest the pattern's pods meet; docs/pod-security.md)",
    "monitoring": "scrape targets and alerts: none (default) | prometheus (Prometheus Operator; docs/monitoring.md); "
                  "gmp is refused, naming why",
    "tls_secret": "serve HTTPS on the gateway with this TLS Secret (in the namespace; docs/tls.md)",
    "cert_manager_issuer": "serve HTTPS with a certificate cert-manager issues from this Issuer (docs/tls.md)",
    "hostname": "the HTTPS listener's hostname (with --tls-secret or --cert-manager-issuer)",
    "inference_engine": "vllm (default) | sglang | trtllm | llamacpp: the model server (docs/engines.md)",
    "alias": "another name for a served model, NAME=MODEL, e.g. --alias chat=Qwen/Qwen2.5-3B-Instruct (repeatable; "
             "docs/aliases.md)",
    "weights": "where weights come from: hf (default: downloaded into a volume) | pvc (a Hugging Face cache on a "
               "claim Lightrail creates, llmd) | pvc:CLAIM[/PATH] (an existing claim) | oci:IMAGE (docs/weights.md)",
    "cache_size": "size of the download volume or created claim, e.g. 40Gi (default: what the accelerators hold)",
}
PLAN_ITERABLE = ["model", "vllm_arg", "alias"]
STACK_ONLY = {"provider": ("llmd", "istio"), "kserve_api": ("kserve", "v1alpha2")}


def make_request(pattern, accel, stack="llmd", model=(), replicas=None, namespace="lightrail",
                 gpu_type=None, topology=None, provider="", kserve_api="", vllm_arg=(), inference_engine="",
                 alias=(), weights="", cache_size="", *, pod_security="", monitoring="", tls_secret="",
                 cert_manager_issuer="", hostname="") -> Request:
    """Turn raw flag values into a Request; the plan does the real checking."""
    if not pattern or not accel:
        raise LightrailError("--pattern and --accel are required (e.g. --pattern=baseline --accel=gpu)")
    if replicas not in (None, ""):
        replicas = whole_number(replicas, "--replicas", maximum=MAX_REPLICAS)
    else:
        replicas = None
    choose("stack", stack, STACKS)
    given = {"provider": provider, "kserve_api": kserve_api}
    for name, (only, _) in STACK_ONLY.items():
        if given[name] and stack != only:
            raise LightrailError(f"--{name.replace('_', '-')} applies to --stack={only} only (got stack={stack})")
    return Request(pattern=pattern, accel=accel, stack=stack, models=models(model), replicas=replicas,
                   namespace=namespace, gpu_type=gpu_type or None, topology=topology or None,
                   provider=provider or STACK_ONLY["provider"][1], kserve_api=kserve_api or STACK_ONLY["kserve_api"][1],
                   kserve_tls=stack == "kserve" and kserve_tls(), extra_args=tuple(vllm_arg or ()),
                   engine=inference_engine or "vllm", aliases=parse_aliases(alias), weights=weights or "hf",
                   cache_size=cache_size or None,
                   pod_security=pod_security or None, monitoring=monitoring or "none",
                   tls_secret=tls_secret or None, cert_manager_issuer=cert_manager_issuer or None,
                   hostname=hostname or None)


def models(values) -> tuple[str, ...]:
    """--model values (repeatable, or comma-separated); an empty one is a mistake, not 'the default'."""
    found = tuple(m.strip() for group in (values or ()) for m in str(group).split(","))
    if any(not m for m in found):
        raise LightrailError("--model is empty; valid: a Hugging Face id (org/name) or a local path (/path)")
    return found


def whole_number(value, flag: str, minimum: int = 1, maximum: int | None = None) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise LightrailError(f"{flag} must be a whole number {bounds}, got {value!r}")
    return number


def seconds(value, flag: str = "--timeout") -> float:
    """A duration flag in seconds (taken as a string: invoke would crash on `--timeout=abc` for an int flag)."""
    try:
        number = float(str(value))
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise LightrailError(f"{flag} must be a positive number of seconds, got {value!r}")
    return number


def out_dir(value: str, flag: str = "--out") -> Path:
    """A directory a task will write into, checked before any work: under no file, not in /proc or /sys, writable."""
    path = Path(value).expanduser().absolute()
    if path.parts[1:2] in (("proc",), ("sys",), ("dev",)):
        raise LightrailError(f"{flag} {path} is inside /{path.parts[1]}, which holds no files; valid: a directory of yours")
    if path.exists() and not path.is_dir():
        raise LightrailError(f"{flag} {path} exists and is not a directory; valid: a new or empty directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise LightrailError(f"{flag} {path} is under {existing}, which is a file; valid: a new or empty directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LightrailError(f"{flag} {path}: {existing} is not writable; valid: a directory you can write to")
    return path
