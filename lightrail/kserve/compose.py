"""Compose the kustomize overlay for a plan: one small overlay per model server.

Each overlay points at the repo's kustomize/base (+ components), renames `model` to the
server's name and patches in the plan's values; kustomize/replacements.yaml carries the name
into object names and selectors. Multimodel adds the body-based router's overlays. The top
overlay gathers them and sets Lightrail's labels.
"""
from __future__ import annotations

import hashlib
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
BBR_PORT = 9004   # the body-based router's ext-proc port (kustomize/body-based-routing)
# KServe's presets set runAsNonRoot, and the vLLM images declare no USER: the kubelet only starts
# them with a numeric non-root user. USER and the inductor cache dir keep torch happy without a
# passwd entry (as KServe's own e2e fixtures do). The simulator image runs as 65532 already.
_NON_ROOT = {"runAsNonRoot": True, "runAsUser": 1000}
_NON_ROOT_ENV = {"USER": "nonroot", "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor-cache"}


def components(plan: Plan, server: ModelServer) -> list[str]:
    """Which kustomize/components/* this server needs."""
    out = ["weights-download" if server.source else "simulator"]
    if server.multinode:
        out.append("multinode")
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
            f"model {server.model!r} is a path inside the image; "
            "KServe loads models from a URI (hf://, pvc://, s3://, oci://)",
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
        # KServe copies these onto the pods it creates (model servers, LWS groups, picker)
        {"op": "add", "path": "/spec/labels", "value": dict(plan.labels)},
        {"op": "add", "path": "/spec/router/scheduler/labels", "value": dict(plan.labels)},
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


def child_name(parent: str, suffix: str) -> str:
    """The name KServe gives a child object (knative kmeta.ChildName): hashed past 63 characters."""
    if len(parent) > 63 - len(suffix):
        return parent[:31 - len(suffix)] + hashlib.md5(parent.encode()).hexdigest() + suffix
    return parent + suffix


def bbr_service(plan: Plan) -> str:
    """The body-based router's in-cluster host name."""
    return f"{plan.pattern.name}-bbr.{plan.namespace}.svc.cluster.local"


def _kustomization(**fields) -> dict:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def _patch(kind: str, ops: list[dict], name: str | None = None) -> dict:
    return {"target": {"kind": kind, **({"name": name} if name else {})}, "patch": dump_yaml(ops)}


def _server_overlay(plan: Plan, server: ModelServer, rel) -> dict:
    patches = [_patch("LLMInferenceService", llmisvc_patch(plan, server), "model")]
    if plan.body_based_routing:
        patches.append(_patch("HTTPRoute", [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/name",
                                             "value": child_name(server.name, "-inference-pool")}]))
    if plan.request.kserve_api != "v1alpha2":
        patches.append(_patch("LLMInferenceService", [{"op": "replace", "path": "/apiVersion",
                                                       "value": f"serving.kserve.io/{plan.request.kserve_api}"}]))
    return _kustomization(namespace=plan.namespace, resources=[rel("base")],
                          components=[rel(f"components/{c}") for c in components(plan, server)],
                          patches=patches, replacements=[{"path": rel("replacements.yaml")}])


def _bbr_overlays(plan: Plan, rel) -> dict[str, dict]:
    """The body-based router in the plan's namespace, and its EnvoyFilter in KServe's gateway namespace."""
    prefix = f"{plan.pattern.name}-"
    filter_ops = [
        {"op": "replace", "path": "/spec/configPatches/0/patch/value/name",
         "value": f"envoy.filters.http.ext_proc.{plan.namespace}.{prefix}bbr"},
        {"op": "replace", "path": "/spec/configPatches/0/patch/value/typed_config/grpc_service/envoy_grpc/cluster_name",
         "value": f"outbound|{BBR_PORT}||{bbr_service(plan)}"},
    ]
    return {
        "body-based-routing": _kustomization(
            namespace=plan.namespace, namePrefix=prefix, resources=[rel("body-based-routing")],
            patches=[_patch("Deployment", [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                                            "value": plan.versions["images"]["bbr"]}]),
                     _patch("DestinationRule", [{"op": "replace", "path": "/spec/host", "value": bbr_service(plan)}])]),
        # named after the namespace too: every deployment's filter shares the gateway's namespace
        "body-based-routing-gateway": _kustomization(
            namePrefix=f"{plan.namespace}-{prefix}", resources=[rel("body-based-routing/gateway")],
            patches=[_patch("EnvoyFilter", filter_ops)]),
    }


def write_overlay(plan: Plan, workdir: Path) -> dict[str, str]:
    """Write the overlays into workdir; return them as {relative path: text} (render artifacts).

    One overlay per model server (and for body-based routing, two more); the top kustomization
    gathers them and labels everything. Namespaces are set per overlay because the EnvoyFilter
    must stay in the gateway's namespace.
    """
    units: dict[str, dict] = {}
    rel = lambda unit: lambda p: os.path.relpath(KUSTOMIZE_DIR / p, workdir / unit)  # noqa: E731
    if plan.body_based_routing:
        units.update(_bbr_overlays(plan, rel("body-based-routing")))
    for server in plan.servers:
        units[server.name] = _server_overlay(plan, server, rel(server.name))
    top = _kustomization(resources=list(units), labels=[{"pairs": dict(plan.labels), "includeSelectors": False,
                                                         "includeTemplates": True}])
    files = {f"{unit}/kustomization.yaml": dump_yaml(k) for unit, k in units.items()}
    files["kustomization.yaml"] = dump_yaml(top)
    for rel_path, text in files.items():
        path = workdir / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files
