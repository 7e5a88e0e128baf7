"""Compose the kustomize overlay for a plan: one small overlay per model server.

Each overlay points at the repo's kustomize/base (+ components), renames `model` to the
server's name and patches in the plan's values; kustomize/replacements.yaml carries the name
into object names and selectors. The top overlay sets the namespace and Lightrail's labels.
"""
from __future__ import annotations

import os
from pathlib import Path

from lightrail.errors import LightrailError
from lightrail.plan import VLLM_PORT, ModelServer, Plan
from lightrail.render import dump_yaml
from lightrail.router import epp_config
from lightrail.settings import KUSTOMIZE_DIR

# Flags KServe sets itself from spec.parallelism (its presets build the vLLM command line).
_PARALLELISM_FLAGS = ("--tensor-parallel-size", "--data-parallel-size", "--data-parallel-size-local",
                      "--enable-expert-parallel")
BASE_POLICIES = ("default-deny", "allow-gateway", "allow-scheduler", "allow-dns", "allow-metrics")
# KServe's presets set runAsNonRoot, and the vLLM images declare no USER: the kubelet only starts
# them with a numeric non-root user. USER and the inductor cache dir keep torch happy without a
# passwd entry (as KServe's own e2e fixtures do). The simulator image runs as 65532 already.
_NON_ROOT = {"runAsNonRoot": True, "runAsUser": 1000}
_NON_ROOT_ENV = {"USER": "nonroot", "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor-cache"}


def components(plan: Plan, server: ModelServer) -> list[str]:
    """Which kustomize/components/* this server needs."""
    out = []
    if server.source:
        out.append("weights-download")
    if server.multinode:
        out.append("multinode")
    if not server.source:
        out.append("simulator")
    if plan.body_based_routing:
        out.append("model-routes")
    return out


def network_policies(plan: Plan, server: ModelServer) -> list[str]:
    """Names of the NetworkPolicies rendered for one server."""
    extra = {"weights-download": "allow-weights-download", "multinode": "allow-peers"}
    names = list(BASE_POLICIES) + [extra[c] for c in components(plan, server) if c in extra]
    return [f"{server.name}-{n}" for n in names]


def model_uri(server: ModelServer) -> str:
    """spec.model.uri: KServe loads weights from a URI; the simulator's is never fetched."""
    if server.source and "://" not in server.source:
        raise LightrailError(
            f"model {server.model!r} is a path inside the image; KServe loads models from a URI (hf://, pvc://, s3://, oci://)",
            fix="use a Hugging Face id (org/name) with --stack=kserve, or --stack=llmd for a local path")
    return server.source or f"hf://{server.model}"


def _hf_token(plan: Plan, server: ModelServer) -> list[dict]:
    """HF_TOKEN by reference to the plan's Secret, for servers that pull gated weights."""
    if not (plan.hf_secret and server.source.startswith("hf://")):
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": plan.hf_secret, "key": "HF_TOKEN"}}}]


def _container(plan: Plan, server: ModelServer) -> dict:
    if server.source:
        args = [a for a in server.args if a.split("=", 1)[0] not in _PARALLELISM_FLAGS]
    else:  # simulator: its own flags; it answers to KServe's publisher-qualified name like vLLM does
        args = [f"--model={server.model}", "--served-model-name", server.model,
                f"publishers/{plan.namespace}/models/{server.model}", f"--port={VLLM_PORT}", *server.args]
    quantities = dict(server.resources)
    container = {"name": "main", "image": server.image, "args": args,
                 "resources": {"requests": quantities, "limits": quantities}}
    if server.command:
        container["command"] = list(server.command)
    env = {**(_NON_ROOT_ENV if server.source else {}), **server.env}
    env_list = [{"name": k, "value": str(v)} for k, v in env.items()] + _hf_token(plan, server)
    if env_list:
        container["env"] = env_list
    if server.source:
        container["securityContext"] = dict(_NON_ROOT)
    return container


def _pod(plan: Plan, server: ModelServer) -> dict:
    pod: dict = {"containers": [_container(plan, server)]}
    if _hf_token(plan, server):   # KServe's storage initializer downloads hf:// weights: it needs the token too
        pod["initContainers"] = [{"name": "storage-initializer", "env": _hf_token(plan, server)}]
    if server.node_selector:
        pod["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        pod["tolerations"] = [dict(t) for t in server.tolerations]
    return pod


def llmisvc_patch(plan: Plan, server: ModelServer) -> list[dict]:
    """JSON-patch operations that turn the base LLMInferenceService into this server."""
    ops = [
        {"op": "replace", "path": "/metadata/name", "value": server.name},
        {"op": "replace", "path": "/spec/model", "value": {"uri": model_uri(server),
                                                          "name": server.model}},
        {"op": "replace", "path": "/spec/replicas", "value": server.replicas},
        {"op": "replace", "path": "/spec/router/scheduler/config/inline", "value": epp_config(plan)},
        # the pinned picker image (KServe's preset brings its own, older one; the rest is the preset's)
        {"op": "add", "path": "/spec/router/scheduler/template",
         "value": {"containers": [{"name": "main", "image": plan.epp_image}]}},
        {"op": "replace", "path": "/spec/template", "value": _pod(plan, server)},
    ]
    mn = server.multinode
    if mn:
        ops.append({"op": "add", "path": "/spec/parallelism",
                    "value": {"tensor": mn.tensor_parallel, "data": mn.data_parallel,
                              "dataLocal": mn.data_parallel_local, "expert": mn.expert_parallel}})
        ops.append({"op": "add", "path": "/spec/worker", "value": _pod(plan, server)})
    elif server.tensor_parallel > 1:
        ops.append({"op": "add", "path": "/spec/parallelism", "value": {"tensor": server.tensor_parallel}})
    return ops


def write_overlay(plan: Plan, workdir: Path) -> dict[str, str]:
    """Write the overlays into workdir; return them as {relative path: text} (render artifacts)."""
    files: dict[str, str] = {}
    for server in plan.servers:
        here = workdir / server.name
        rel = lambda p: os.path.relpath(KUSTOMIZE_DIR / p, here)  # noqa: E731
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [rel("base")],
            "components": [rel(f"components/{c}") for c in components(plan, server)],
            "patches": [{"target": {"kind": "LLMInferenceService", "name": "model"},
                         "patch": dump_yaml(llmisvc_patch(plan, server))}],
            "replacements": [{"path": rel("replacements.yaml")}],
        }
        if plan.request.kserve_api != "v1alpha2":
            kustomization["patches"].append({
                "target": {"kind": "LLMInferenceService"},
                "patch": dump_yaml([{"op": "replace", "path": "/apiVersion",
                                          "value": f"serving.kserve.io/{plan.request.kserve_api}"}]),
            })
        files[f"{server.name}/kustomization.yaml"] = dump_yaml(kustomization)
    files["kustomization.yaml"] = dump_yaml({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": plan.namespace,
        "resources": [s.name for s in plan.servers],
        "labels": [{"pairs": dict(plan.labels), "includeSelectors": False}],
    })
    for rel_path, text in files.items():
        path = workdir / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files
