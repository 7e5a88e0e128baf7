"""Pod Security Admission: the level a deployment's namespace enforces, and the securityContexts that pass it.

Kubernetes' built-in PodSecurity admission checks every pod against the level its namespace is
labelled with. Lightrail picks the strictest level the pattern's pods can meet (`restricted`
unless an upstream part needs more, said in patterns/<pattern>.yaml `pod_security`), refuses a
stricter one with that reason, and renders securityContexts that pass the chosen level.
"""
from __future__ import annotations

from typing import Mapping

from lightrail.errors import LightrailError, choose

LEVELS = ("restricted", "baseline", "privileged")   # strictest first
LABEL = "pod-security.kubernetes.io"
# What `restricted` asks of every pod and container (besides what it forbids, which no render sets).
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# The vLLM images declare no USER (root): a non-root pod needs a numeric user for the kubelet to
# start it, and USER / TORCHINDUCTOR_CACHE_DIR keep torch working without a passwd entry (as
# KServe's own e2e fixtures do). The simulator, EPP and BBR images are distroless `nonroot`.
VLLM_USER = 1000
NON_ROOT_ENV = {"USER": "nonroot", "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor-cache"}
DISTROLESS_USER = 65532


def level(requested: str | None, minimum: Mapping[str, str] | None) -> str:
    """The level to enforce: the one asked for, or the strictest the pods can meet (`minimum`:
    {level, reason} from the pattern for this stack, or None for restricted)."""
    least = (minimum or {}).get("level", LEVELS[0])
    if requested in (None, ""):
        return least
    choose("pod security level", requested, LEVELS)
    if LEVELS.index(requested) < LEVELS.index(least):
        allowed = ", ".join(LEVELS[LEVELS.index(least):])
        raise LightrailError(f"--pod-security={requested} is too strict for these pods: {minimum['reason']}",
                             fix=f"valid here: {allowed}")
    return requested


def namespace_labels(enforced: str, kubernetes: str) -> dict[str, str]:
    """PSA labels: enforce, audit and warn at one level, pinned to the Kubernetes minor we validate against
    (a newer API server then keeps checking by the rules the render was made for)."""
    version = "v" + ".".join(kubernetes.lstrip("v").split(".")[:2])
    out = {}
    for mode in ("enforce", "audit", "warn"):
        out[f"{LABEL}/{mode}"] = enforced
        out[f"{LABEL}/{mode}-version"] = version
    return out


def pod_context(enforced: str, user: int | None = None) -> dict:
    """A pod's securityContext at this level: restricted's fields (and a numeric user for images
    that would run as root); nothing below restricted, where the images run as they were built."""
    if enforced != "restricted":
        return {}
    return {**RESTRICTED_POD, **({"runAsUser": user} if user else {})}


def container_context(enforced: str) -> dict:
    return dict(RESTRICTED_CONTAINER) if enforced == "restricted" else {}
