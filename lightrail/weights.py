"""Where a model server's weights come from (`--weights`, `--cache-size`), per stack.

llmd: llm-d-modelservice's `modelArtifacts.uri` (hf:// into a sized emptyDir, pvc:// read-only,
pvc+hf:// a Hugging Face cache on a claim, oci:// an image volume), all mounted at /model-cache.
kserve: `spec.model.uri` (hf://, pvc://, oci:// model cars); KServe puts them at /mnt/models.
Pure: the plan calls it per server; docs/weights.md has the upstream details and GKE recipes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lightrail.errors import LightrailError

MOUNT = "/model-cache"          # llm-d-modelservice modelArtifacts.mountPath (its default)
HF_HUB = "hub"                  # the Hugging Face cache's directory on a Lightrail claim (pvc+hf://claim/hub/...)
IMAGE_MODEL_DIR = "models"      # model-car layout (KServe's modelcars): the weights under /models in the image
CHOICES = "hf, pvc, pvc:CLAIM[/PATH], oci:IMAGE"
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[1-9][0-9]*(Mi|Gi|Ti)$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$")


@dataclass(frozen=True)
class Weights:
    """One server's weights: the URI its stack is given and, on llmd, what the engine loads."""

    kind: str                  # hf | pvc (an existing claim) | pvc-cache (a claim Lightrail creates) | oci
    uri: str
    load: str                  # llmd: the Hugging Face id the engine downloads, or a path under MOUNT
    cache: str | None = None   # size of the download volume (emptyDir) or of the claim Lightrail creates
    claim: str | None = None
    access_mode: str | None = None   # of the claim Lightrail creates


def parse(value: str) -> tuple[str, str]:
    """--weights into (kind, argument), checked."""
    value = (value or "hf").strip()
    if value in ("hf", "pvc"):
        return ("hf" if value == "hf" else "pvc-cache"), ""
    kind, _, arg = value.partition(":")
    if kind == "pvc" and arg:
        claim, _, path = arg.partition("/")
        if not _CLAIM.match(claim):
            raise LightrailError(f"--weights claim {claim!r} is not a Kubernetes name (lowercase letters, digits, "
                                 "'-' or '.')")
        if ".." in path.split("/"):
            raise LightrailError(f"--weights path {path!r} must stay inside the claim (no '..')")
        return "pvc", arg.rstrip("/")
    if kind == "oci" and _IMAGE.match(arg):
        return "oci", arg
    raise LightrailError(f"--weights {value!r} is not a weights source; valid: {CHOICES}")


def check_cache_size(value: str | None) -> str | None:
    if value and not _QUANTITY.match(value):
        raise LightrailError(f"--cache-size {value!r} is not a size; valid: a whole number of Mi, Gi or Ti, e.g. 40Gi")
    return value or None


def resolve(kind: str, arg: str, *, stack: str, model: str, server: str, pods: int, models: int,
            default_cache: str | None, cache_size: str | None) -> Weights:
    """The weights of one server of a plan (`models` servers in all, `pods` pods in this one)."""
    given = "hf" if kind == "hf" else ("pvc" if kind == "pvc-cache" else f"{kind}:{arg}")
    if cache_size and kind not in ("hf", "pvc-cache"):
        raise LightrailError(f"--cache-size sizes a download (hf, pvc); --weights={given} brings its own storage")
    if stack == "kserve":
        if cache_size:
            raise LightrailError("--cache-size applies to --stack=llmd only: KServe sizes its storage-initializer "
                                 "volume itself")
        if kind == "pvc-cache":
            raise LightrailError("--weights=pvc with --stack=kserve is refused: KServe reads pvc:// claims that hold "
                                 "the weights already (its download cache is LocalModelCache, a cluster-wide opt-in "
                                 "Lightrail does not render); valid: --weights=pvc:CLAIM[/PATH]")
    if kind in ("pvc", "oci") and models > 1 and (kind == "oci" or "/" in arg):
        raise LightrailError(f"--weights={given} names one model's weights, and this plan serves {models} models; "
                             "valid: --weights=pvc:CLAIM (each model under its id), hf or pvc")
    if stack == "kserve":
        default_cache = None   # KServe's storage initializer sizes (and fills) its own volume
    if kind == "hf":
        return Weights("hf", f"hf://{model}", model, cache=cache_size or default_cache)
    if kind == "pvc-cache":
        claim = f"{server}-weights"
        return Weights("pvc-cache", f"pvc+hf://{claim}/{HF_HUB}/{model}", model, cache=cache_size or default_cache,
                       claim=claim, access_mode="ReadWriteMany" if pods > 1 else "ReadWriteOnce")
    if kind == "pvc":
        claim, _, path = arg.partition("/")
        path = path or model
        return Weights("pvc", f"pvc://{claim}/{path}", f"{MOUNT}/{path}", claim=claim)
    return Weights("oci", f"oci://{arg}", f"{MOUNT}/{IMAGE_MODEL_DIR}")


def claim_object(weights: Weights, namespace: str) -> dict:
    """The claim Lightrail creates for --weights=pvc: kept by helm uninstall and by `teardown` (unless
    --no-keep-pvcs), so a redeploy finds the downloaded weights."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": weights.claim, "namespace": namespace,
                     "annotations": {"helm.sh/resource-policy": "keep"}},
        "spec": {"accessModes": [weights.access_mode], "resources": {"requests": {"storage": weights.cache}}},
    }


def shared_claim_problem(access_modes: list[str], pods: int, claim: str) -> str | None:
    """Why a claim cannot serve `pods` pods, which may run on different nodes (None: it can)."""
    if pods > 1 and access_modes and set(access_modes) <= {"ReadWriteOnce", "ReadWriteOncePod"}:
        return (f"claim {claim} is {'/'.join(access_modes)}: it mounts on one node, and the {pods} pods may land "
                "on several; use a ReadOnlyMany or ReadWriteMany claim (docs/weights.md)")
    return None
