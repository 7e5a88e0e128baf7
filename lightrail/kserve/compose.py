"""Compose the kustomize overlay for a plan: one small overlay per model server.

Each overlay points at kustomize/base (+ components), renames `model` to the server's name and
patches in the plan's values; kustomize/replacements.yaml carries the name into object names
and selectors. Multimodel adds the body-based router's overlays. The top overlay gathers them
and sets Lightrail's labels. The tree is self-contained (the parts of kustomize/ it uses are
copied into `lib/`), so a written render builds by hand with plain `kubectl kustomize`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from lightrail import podsecurity
from lightrail.errors import LightrailError
from lightrail.plan import UNIT_LABEL, VLLM_PORT, ModelServer, Plan, front_route
from lightrail.render import dump_yaml
from lightrail.router import epp_config, metrics_scheme
from lightrail.settings import KUSTOMIZE_DIR

# Flags KServe sets itself from spec.parallelism (its presets build the vLLM command line).
_PARALLELISM_FLAGS = ("--tensor-parallel-size", "--data-parallel-size", "--data-parallel-size-local",
                      "--enable-expert-parallel")
BASE_POLICIES = ("default-deny", "allow-gateway", "allow-scheduler", "allow-dns", "allow-metrics")
BBR_PORT = 9004   # the body-based router's ext-proc port (kustomize/body-based-routing)
LIB = "lib"       # where the render's copy of kustomize/ goes, beside the overlays
REPLACEMENTS = "replacements.yaml"   # copied into each server overlay (kustomize loads files only from below a root)
# KServe's presets set runAsNonRoot, and the vLLM images declare no USER: the kubelet only starts
# them with a numeric non-root user (lightrail/podsecurity.py). The simulator image runs as 65532 already.
_NON_ROOT = {"runAsNonRoot": True, "runAsUser": podsecurity.VLLM_USER}
# KServe's scheduler preset mounts its certificates here when enableLLMInferenceServiceTLS is on.
KSERVE_TLS_DIR = "/var/run/kserve/tls"


def epp_command(plan: Plan, server: ModelServer) -> list[str]:
    """The endpoint picker's command: KServe v0.20's scheduler preset, minus the flag the pinned EPP lacks.

    The preset (written for EPP v0.9) adds --model-server-metrics-scheme=https when TLS is on;
    EPP v0.10 no longer defines it and exits, so the whole command is ours (the metrics scheme
    is in the inline config). Pool name and namespace are what the preset templates in.
    """
    command = ["/app/epp", "--pool-name", child_name(server.name, "-inference-pool"), "--pool-namespace",
               plan.namespace, "--zap-encoder", "json", "--grpc-port", "9002", "--grpc-health-port", "9003"]
    if plan.request.kserve_tls:
        command += ["--enable-cert-reload=true", "--secure-serving=true", f"--cert-path={KSERVE_TLS_DIR}"]
    if plan.request.monitoring != "none":
        # Our PodMonitor scrapes /metrics without the bearer token the picker asks for by default
        # (the llmd chart sets the same flag when its own metrics auth is off).
        command.append("--metrics-endpoint-auth=false")
    return command


def startup_probe(plan: Plan, server: ModelServer) -> dict:
    """The accelerator's startup budget on the path and scheme KServe's preset probes (the
    simulator, with its own command, serves plain HTTP)."""
    scheme = metrics_scheme(plan).upper() if server.source else "HTTP"
    return {"httpGet": {"path": "/health", "port": VLLM_PORT, "scheme": scheme}, **server.startup}


def components(plan: Plan, server: ModelServer) -> list[str]:
    """Which kustomize/components/* this server needs."""
    if not server.source:
        out = ["simulator"]
    else:   # only a download needs the way out to Hugging Face; pvc:// and oci:// weights are in the cluster
        out = ["weights-download"] if server.weights and server.weights.kind == "hf" else []
    if server.multinode:
        out.append("multinode")
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


def served_names(plan: Plan, server: ModelServer) -> list[str]:
    """The names a server answers to, as KServe's preset gives vLLM: plain and publisher-qualified.

    The first is the one vLLM puts in its responses, so it is the name clients send
    (Plan.client_model): the qualified one behind body-based routing.
    """
    names = [server.model, f"publishers/{plan.namespace}/models/{server.model}"]
    client = plan.client_model(server)
    if server.aliases:   # KServe's name is the alias (spec.model.name); the model's own id keeps answering
        (alias,) = server.aliases
        return [alias, f"publishers/{plan.namespace}/models/{alias}", server.model]
    return [client] + [n for n in names if n != client]


def _container(plan: Plan, server: ModelServer) -> dict:
    if server.engine != "vllm":   # an advanced override: the engine's whole command replaces the preset's
        args = list(server.args)
    elif server.source:
        args = [a for a in server.args if a.split("=", 1)[0] not in _PARALLELISM_FLAGS]
        if plan.client_model(server) != server.model or server.aliases:   # after the preset's: the last flag wins
            args += ["--served-model-name", *served_names(plan, server)]
    else:  # simulator: its own flags; it answers to KServe's publisher-qualified name like vLLM does
        args = [f"--model={server.model}", "--served-model-name", *served_names(plan, server),
                f"--port={VLLM_PORT}", *server.args]
    quantities = dict(server.resources)
    container = {"name": "main", "image": server.image, "args": args,
                 "resources": {"requests": quantities, "limits": quantities}}
    if server.command:
        container["command"] = list(server.command)
    env = {**(podsecurity.NON_ROOT_ENV if server.source else {}), **server.env}
    env_list = [{"name": k, "value": str(v)} for k, v in env.items()] + _hf_token(plan, server)
    if env_list:
        container["env"] = env_list
    context = {**(_NON_ROOT if server.source else {}), **podsecurity.container_context(plan.pod_security)}
    if context:
        container["securityContext"] = context
    return container


def _pod(plan: Plan, server: ModelServer, serving: bool = True) -> dict:
    """A pod template; `serving` pods (not the headless LWS workers) get the startup budget."""
    container = _container(plan, server)
    if serving:
        container["startupProbe"] = startup_probe(plan, server)
    pod: dict = {"containers": [container]}
    initializer = {"env": _hf_token(plan, server)} if _hf_token(plan, server) else {}   # it downloads hf:// weights
    if server.source and podsecurity.container_context(plan.pod_security):
        initializer["securityContext"] = podsecurity.container_context(plan.pod_security)
    if initializer:
        pod["initContainers"] = [{"name": "storage-initializer", **initializer}]
    if podsecurity.pod_context(plan.pod_security):
        pod["securityContext"] = podsecurity.pod_context(plan.pod_security)
    if server.node_selector:
        pod["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        pod["tolerations"] = [dict(t) for t in server.tolerations]
    return pod


def _scheduler_pod(plan: Plan, server: ModelServer) -> dict:
    """The endpoint picker's pod: the pinned image and our command; KServe's preset brings the rest."""
    main = {"name": "main", "image": plan.epp_image, "command": epp_command(plan, server)}
    if podsecurity.container_context(plan.pod_security):
        main["securityContext"] = podsecurity.container_context(plan.pod_security)
    pod: dict = {"containers": [main]}
    if podsecurity.pod_context(plan.pod_security):
        pod["securityContext"] = podsecurity.pod_context(plan.pod_security)
    if server.source and podsecurity.container_context(plan.pod_security):
        # KServe gives the picker a storage-initializer too (tokenizer files) and merges ours into it
        pod["initContainers"] = [{"name": "storage-initializer",
                                  "securityContext": podsecurity.container_context(plan.pod_security)}]
    return pod


def llmisvc_patch(plan: Plan, server: ModelServer) -> list[dict]:
    """JSON-patch operations that turn the base LLMInferenceService into this server."""
    ops = [
        {"op": "replace", "path": "/metadata/name", "value": server.name},
        {"op": "replace", "path": "/spec/model", "value": {"uri": model_uri(server),
                                                          "name": (server.aliases or (server.model,))[0]}},
        {"op": "replace", "path": "/spec/replicas", "value": server.replicas},
        # KServe copies these onto the pods it creates (model servers, LWS groups, picker)
        {"op": "add", "path": "/spec/labels", "value": dict(plan.labels)},
        {"op": "add", "path": "/spec/router/scheduler/labels", "value": dict(plan.labels)},
        {"op": "replace", "path": "/spec/router/scheduler/config/inline", "value": epp_config(plan)},
        # the pinned picker image (KServe's preset brings its own, older one) and its command
        {"op": "add", "path": "/spec/router/scheduler/template",
         "value": _scheduler_pod(plan, server)},
        {"op": "replace", "path": "/spec/template", "value": _pod(plan, server)},
    ]
    if plan.gateway.external:   # served through Lightrail's front route on an existing Gateway (Request.front)
        ops += [{"op": "replace", "path": "/spec/router/gateway",
                 "value": {"refs": [{"name": plan.gateway.name, "namespace": plan.gateway.namespace}]}},
                {"op": "replace", "path": "/spec/router/route", "value": {"http": {"refs": [{"name": front_route(server)}]}}}]
    elif plan.tls:   # KServe's route attaches to our HTTPS Gateway instead of its shared one
        ops.append({"op": "add", "path": "/spec/router/gateway",
                    "value": {"refs": [{"name": plan.gateway.name, "namespace": plan.namespace}]}})
    mn = server.multinode
    if mn:
        ops.append({"op": "add", "path": "/spec/parallelism",
                    "value": {"tensor": mn.tensor_parallel, "data": mn.data_parallel,
                              "dataLocal": mn.data_parallel_local, "expert": mn.expert_parallel}})
        ops.append({"op": "add", "path": "/spec/worker", "value": _pod(plan, server, serving=False)})
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


def _lib(path: str) -> str:
    """A path in the render's copy of kustomize/, as seen from an overlay beside it."""
    return f"../{LIB}/{path}"


def _server_overlay(plan: Plan, server: ModelServer) -> dict:
    patches = [_patch("LLMInferenceService", llmisvc_patch(plan, server), "model")]
    if plan.request.kserve_api != "v1alpha2":
        patches.append(_patch("LLMInferenceService", [{"op": "replace", "path": "/apiVersion",
                                                       "value": f"serving.kserve.io/{plan.request.kserve_api}"}]))
    return _kustomization(namespace=plan.namespace, resources=[_lib("base")],
                          components=[_lib(f"components/{c}") for c in components(plan, server)],
                          patches=patches, replacements=[{"path": REPLACEMENTS}])


def _bbr_overlays(plan: Plan) -> dict[str, dict]:
    """The body-based router in the plan's namespace, and its EnvoyFilter in KServe's gateway namespace."""
    prefix = f"{plan.pattern.name}-"
    # kserve/units.py's name; on the pods too (their ReplicaSet copies it), which a teardown must spare with it
    unit = [{"pairs": {UNIT_LABEL: f"{prefix}bbr"}, "includeSelectors": False, "includeTemplates": True}]
    filter_ops = [
        {"op": "replace", "path": "/spec/configPatches/0/patch/value/name",
         "value": f"envoy.filters.http.ext_proc.{plan.namespace}.{prefix}bbr"},
        {"op": "replace", "path": "/spec/configPatches/0/patch/value/typed_config/grpc_service/envoy_grpc/cluster_name",
         "value": f"outbound|{BBR_PORT}||{bbr_service(plan)}"},
    ]
    return {
        "body-based-routing": _kustomization(
            namespace=plan.namespace, namePrefix=prefix, labels=unit, resources=[_lib("body-based-routing")],
            patches=[_patch("Deployment", [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                                            "value": plan.versions["images"]["bbr"]}]),
                     _patch("DestinationRule", [{"op": "replace", "path": "/spec/host", "value": bbr_service(plan)}])]),
        # named after the namespace too: every deployment's filter shares the gateway's namespace
        "body-based-routing-gateway": _kustomization(
            namePrefix=f"{plan.namespace}-{prefix}", labels=unit, resources=[_lib("body-based-routing/gateway")],
            patches=[_patch("EnvoyFilter", filter_ops)]),
    }


def library(plan: Plan) -> dict[str, str]:
    """The parts of kustomize/ this plan's overlays use, as {path under lib/: text}."""
    dirs = ["base"] + sorted({f"components/{c}" for s in plan.servers for c in components(plan, s)})
    if plan.body_router:
        dirs.append("body-based-routing")
    return {f"{LIB}/{p.relative_to(KUSTOMIZE_DIR)}": p.read_text()
            for d in dirs for p in sorted((KUSTOMIZE_DIR / d).rglob("*")) if p.is_file()}


GATEWAY = "gateway"         # the overlay with the HTTPS Gateway (--tls-secret / --cert-manager-issuer)
MONITORING = "monitoring"   # the overlay with the PodMonitors, the PrometheusRule and the dashboard (--monitoring)


def _monitoring_overlay(plan: Plan) -> tuple[dict, dict[str, str]]:
    """A unit of plain manifests: KServe makes no monitors, so we do (lightrail/monitoring.py)."""
    from lightrail import monitoring

    objects = [*monitoring.kserve_pod_monitors(plan), monitoring.prometheus_rule(plan),
               monitoring.dashboard_configmap(plan)]
    return (_kustomization(namespace=plan.namespace, resources=["monitors.yaml"]),
            {f"{MONITORING}/monitors.yaml": "---\n".join(dump_yaml(o) for o in objects)})


def write_overlay(plan: Plan, workdir: Path) -> dict[str, str]:
    """Write the overlays and their library into workdir; return them as {relative path: text}.

    One overlay per model server (and for body-based routing, two more); the top kustomization
    gathers them and labels everything. Namespaces are set per overlay because the EnvoyFilter
    must stay in the gateway's namespace.
    """
    units: dict[str, dict] = {}
    if plan.body_router:
        units.update(_bbr_overlays(plan))
    for server in plan.servers:
        units[server.name] = _server_overlay(plan, server)
    extra: dict[str, str] = {}
    if plan.tls:
        from lightrail.tls import kserve_gateway

        units = {GATEWAY: _kustomization(namespace=plan.namespace, resources=["gateway.yaml"]), **units}
        extra[f"{GATEWAY}/gateway.yaml"] = dump_yaml(kserve_gateway(plan, plan.tls))
    if plan.request.monitoring != "none":
        units[MONITORING], monitors = _monitoring_overlay(plan)
        extra.update(monitors)
    top = _kustomization(resources=list(units), labels=[{"pairs": dict(plan.labels), "includeSelectors": False,
                                                         "includeTemplates": True}])
    files = {f"{unit}/kustomization.yaml": dump_yaml(k) for unit, k in units.items()}
    replacements = (KUSTOMIZE_DIR / REPLACEMENTS).read_text()
    files.update({f"{server.name}/{REPLACEMENTS}": replacements for server in plan.servers})
    files.update(library(plan))
    files.update(extra)
    files["kustomization.yaml"] = dump_yaml(top)
    for rel_path, text in files.items():
        path = workdir / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files
