"""Values for every llmd release, composed from the plan (no per-pattern values files).

Releases (see helmfiles/helmfile.yaml.gotmpl): `<pattern>-infra` (llm-d-infra: the Gateway),
`<pattern>-bbr` (body-based routing, multimodel only: the upstream extension, or on agentgateway
our own chart in helmfiles/charts), and per model server `<name>`
(llm-d-router gateway chart: endpoint picker, InferencePool and HTTPRoute) and `<name>-ms`
(llm-d-modelservice: the vLLM or simulator pods).
"""
from __future__ import annotations

import shlex

import yaml

from lightrail import monitoring, podsecurity, tls
from lightrail import engines
from lightrail.aliases import model_rewrite
from lightrail.catalog import load_catalog
from lightrail.plan import VLLM_PORT, ModelServer, Plan
from lightrail.router import MODEL_HEADER, epp_config
from lightrail.settings import HELMFILES_DIR
from lightrail.weights import MOUNT as MODEL_MOUNT
from lightrail.weights import claim_object

# Charts Lightrail ships itself (helmfiles/charts/<name>): never fetched, never in LIGHTRAIL_CHARTS.
OWN_CHARTS = HELMFILES_DIR / "charts"

EPP_CONFIG_FILE = "lightrail.yaml"
# The EPP's chart default asks for 8 CPUs; one picker per model needs far less.
EPP_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
# vLLM and the simulator answer /health once the engine runs and /v1/models once they serve;
# the startup probe's budget is the accelerator's (patterns/accelerators.yaml `startup`).
HEALTH = {"httpGet": {"path": "/health", "port": VLLM_PORT}}
READINESS = {"httpGet": {"path": "/v1/models", "port": VLLM_PORT}, "periodSeconds": 10}
LIVENESS = {**HEALTH, "periodSeconds": 30, "failureThreshold": 3}


def probes(server: ModelServer) -> dict:
    return {"startupProbe": {**HEALTH, **server.startup}, "readinessProbe": READINESS, "livenessProbe": LIVENESS}
# NCCL and vLLM's worker queues use /dev/shm once a pod runs several ranks; containers get 64Mi.
SHM = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
# llm-d-modelservice `accelerator.type` per Lightrail accelerator.
_MS_ACCELERATOR = {"gpu": "nvidia", "tpu": "google", "cpu": "cpu", "sim": "cpu"}


def server_labels(server: ModelServer) -> dict[str, str]:
    """Pod labels that the model's InferencePool selects on; other engines also carry the label the
    endpoint picker reads their metric map by (vLLM's is its default)."""
    labels = {"llm-d.ai/inference-serving": "true", "llm-d.ai/model": server.name}
    if server.engine != engines.DEFAULT:
        labels[engines.ENGINE_LABEL] = load_catalog().engines[server.engine]["epp_engine"]
    return labels


def _image(ref: str) -> dict[str, str]:
    name, _, tag = ref.rpartition(":")
    registry, _, repository = name.partition("/")
    return {"registry": registry, "repository": repository, "tag": tag}


def infra_values(plan: Plan) -> dict:
    provider = load_catalog().gateways[plan.gateway.provider]
    gateway = {"provider": provider["infra"], "fullnameOverride": plan.gateway.name}
    if plan.tls:   # one HTTPS listener in place of the chart's plain HTTP one
        t = plan.tls
        gateway["listeners"] = [{"name": "https", "port": tls.HTTPS_PORT, "protocol": "HTTPS",
                                 "allowedRoutes": {"namespaces": {"from": "All"}},
                                 "tls": {"hostname": t.hostname, "mode": "Terminate",
                                         "certificateRefs": [{"name": t.secret, "kind": "Secret"}]}}]
        if t.annotations():
            gateway["annotations"] = t.annotations()
    return {"gateway": gateway}


def bbr_chart(plan: Plan) -> str:
    """agentgateway reads request bodies itself; the other gateways call the BBR extension."""
    return "agentgateway-body-routing" if plan.gateway.provider == "agentgateway" else "body-based-routing"


def bbr_values(plan: Plan) -> dict:
    if bbr_chart(plan) == "agentgateway-body-routing":
        return {"gateway": plan.gateway.name, "header": MODEL_HEADER}
    image = _image(load_catalog().image("bbr"))
    return {
        "bbr": {"name": f"{plan.pattern.name}-bbr", "image": {**image, "pullPolicy": "IfNotPresent"}},
        "provider": {"name": load_catalog().gateways[plan.gateway.provider]["router"]},
        "inferenceGateway": {"name": plan.gateway.name},
    }


def router_monitoring(plan: Plan, server: ModelServer) -> dict:
    """The chart's EPP scraping: a Prometheus Operator ServiceMonitor with the chart's metrics auth (a
    service-account token Secret, named per release: the default name would collide between the
    releases of a multimodel deployment)."""
    return {"provider": {"name": "prometheusoperator"},
            "prometheus": {"enabled": True, "auth": {"enabled": True, "secretName": f"{server.name[:40]}-metrics-reader"}}}


def router_values(plan: Plan, server: ModelServer) -> dict:
    # served through Lightrail's front route (Request.front): the chart's own route would compete with it
    route = {"create": not plan.gateway.external, "inferenceGatewayName": plan.gateway.name}
    if plan.body_based_routing:
        route["headerMatches"] = {MODEL_HEADER: server.model}
    extra = {"monitoring": router_monitoring(plan, server)} if plan.request.monitoring != "none" else {}
    return {
        "router": {
            **extra,
            "modelServers": {"matchLabels": server_labels(server)},
            "epp": {
                "image": {**_image(plan.epp_image), "pullPolicy": "IfNotPresent"},
                "pluginsConfigFile": EPP_CONFIG_FILE,
                "pluginsCustomConfig": {EPP_CONFIG_FILE: yaml.safe_dump(epp_config(plan), sort_keys=False)},
                "resources": EPP_RESOURCES,
            },
        },
        "provider": {"name": load_catalog().gateways[plan.gateway.provider]["router"]},
        "httpRoute": route,
    }


def weights_volume(plan: Plan, server: ModelServer) -> str | None:
    """Size of the volume hf:// weights are downloaded into (the plan's: the chart's default is 5Mi)."""
    return server.weights.cache if server.weights else None


def served_names(plan: Plan, server: ModelServer) -> list[str]:
    """The names a model server answers to: the one clients send first (vLLM answers with it), then
    the model's own id. They differ behind KServe's shared gateway (Plan.client_model), where a
    migration puts an llmd deployment that started on kserve."""
    client = plan.client_model(server)
    return [client] + ([server.model] if client != server.model else [])


def vllm_command(plan: Plan, server: ModelServer) -> tuple[list[str], list[str]]:
    """Command and args of a vLLM container, with the plan's flags as they are.

    The chart's own `vllmServe` command cannot serve a model from a path in the container, nor
    give each pod of a LeaderWorkerSet group its data-parallel ranks. There every pod serves its
    local ranks itself (hybrid load balancing: each pod is an endpoint of the InferencePool) and
    joins the leader's coordinator; LWS sets LWS_LEADER_ADDRESS and LWS_WORKER_INDEX.
    """
    argv = ["vllm", "serve", server.weights.load if server.weights else server.source, "--port", str(VLLM_PORT),
            "--served-model-name", *served_names(plan, server), *server.args]
    if not server.multinode:
        return argv[:2], argv[2:]
    ranks = ["--data-parallel-hybrid-lb", '--data-parallel-address="$LWS_LEADER_ADDRESS"',
             f"--data-parallel-start-rank=$((LWS_WORKER_INDEX * {server.multinode.data_parallel_local}))"]
    return ["/bin/sh", "-c"], [" ".join(["exec", *map(shlex.quote, argv), *ranks])]


def modelservice_values(plan: Plan, server: ModelServer) -> dict:
    quantities = dict(server.resources)
    restricted_vllm = plan.pod_security == "restricted" and bool(server.source)   # a root image run as non-root
    env = {**(podsecurity.NON_ROOT_ENV if restricted_vllm else {}), **server.env}
    container = {
        "name": "vllm",
        "image": server.image,
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "ports": [{"containerPort": VLLM_PORT, "name": "metrics", "protocol": "TCP"}],
        "resources": {"limits": quantities, "requests": quantities},
        # The chart makes the model volume from the weights' URI (and sets HF_HOME / HF_HUB_CACHE).
        "mountModelVolume": server.weights is not None,
        "extraConfig": {**probes(server), **_security(podsecurity.container_context(plan.pod_security))},
    }
    if server.engine != engines.DEFAULT:   # the engine's whole command line, from the plan
        container.update(modelCommand="custom", command=list(server.command), args=list(server.args))
        cache_env = load_catalog().engines[server.engine].get("hf_cache_env")
        if cache_env and server.weights and server.weights.kind in ("hf", "pvc-cache"):
            container["env"].append({"name": cache_env, "value": MODEL_MOUNT})
    elif server.source:
        command, args = vllm_command(plan, server)
        container.update(modelCommand="custom", command=command, args=args)
    else:   # the simulator's own entrypoint; the chart adds --model, --port and --served-model-name <model>,
        # which ours extends (repeated, the simulator's flag adds to its list of names)
        names = served_names(plan, server)
        container.update(modelCommand="imageDefault",
                         args=(["--served-model-name", *names] if names != [server.model] else []) + list(server.args))
    parallelism = {"tensor": server.tensor_parallel}
    if server.multinode:
        mn = server.multinode
        parallelism.update(data=mn.data_parallel, dataLocal=mn.data_parallel_local, workers=mn.size)
    decode = {
        "create": True,
        "replicas": server.replicas,
        "parallelism": parallelism,
        "containers": [container],
    }
    if server.source and server.tensor_parallel * (server.multinode.data_parallel_local if server.multinode else 1) > 1:
        decode["volumes"] = [SHM]
        container["volumeMounts"] = [{"name": SHM["name"], "mountPath": "/dev/shm"}]
    pod_context = podsecurity.pod_context(plan.pod_security, podsecurity.VLLM_USER if restricted_vllm else None)
    if pod_context:
        decode["extraConfig"] = {"securityContext": pod_context}
    if server.node_selector:
        decode["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        decode["tolerations"] = [dict(t) for t in server.tolerations]
    artifacts = {
        "name": server.model,
        "uri": server.source or f"hf://{server.model}",
        "labels": server_labels(server),
    }
    kind = server.weights.kind if server.weights else None
    if kind == "hf":
        artifacts["size"] = weights_volume(plan, server)
    if kind == "pvc-cache":   # the Hugging Face cache on the claim is written to
        artifacts["readOnly"] = False
    if plan.hf_secret and kind in ("hf", "pvc-cache"):
        artifacts["authSecretName"] = plan.hf_secret
    if plan.request.monitoring == "prometheus":   # the chart's PodMonitor scrapes the container port named `metrics`
        decode["monitoring"] = {"podmonitor": {"enabled": True, "portName": "metrics", "path": "/metrics"}}
    objects = ([claim_object(server.weights, plan.namespace)] if kind == "pvc-cache" else []) \
        + ([model_rewrite(server, plan.namespace)] if server.aliases else [])
    extra = {"extraObjects": objects} if objects else {}
    return {
        **extra,
        "fullnameOverride": server.name,
        "multinode": bool(server.multinode),
        "modelArtifacts": artifacts,
        "accelerator": {"type": _MS_ACCELERATOR[plan.accel]},
        # One role (decode) and no P/D disaggregation: vLLM listens on the service port itself.
        "routing": {"servicePort": VLLM_PORT, "proxy": {"enabled": False}},
        "decode": decode,
        "prefill": {"create": False},
    }


def _security(context: dict) -> dict:
    return {"securityContext": context} if context else {}


def restricted_deployments(plan: Plan) -> list[str]:
    """Deployments of upstream charts that offer no value for a securityContext, as post-renderer
    arguments (`Deployment/NAME/CONTAINER/UID`): the endpoint pickers (llm-d-router-gateway) and
    the body-based router (body-based-routing), both distroless images. Only for `restricted`;
    helmfiles/post-render-labels patches them."""
    if plan.pod_security != "restricted":
        return []
    uid = podsecurity.DISTROLESS_USER
    out = [f"Deployment/{s.name[:40]}-epp/epp/{uid}" for s in plan.servers]   # the chart truncates the release name
    if plan.body_router and bbr_chart(plan) == "body-based-routing":
        out.append(f"Deployment/{plan.pattern.name}-bbr/bbr/{uid}")
    return out


def release_values(plan: Plan) -> dict[str, tuple[str, dict]]:
    """Every release: name -> (chart: a name in versions.yaml or one of OWN_CHARTS, values)."""
    out = {} if plan.gateway.external else {f"{plan.pattern.name}-infra": ("llm-d-infra", infra_values(plan))}
    if plan.body_router:
        out[f"{plan.pattern.name}-bbr"] = (bbr_chart(plan), bbr_values(plan))
    for s in plan.servers:
        out[s.name] = ("llm-d-router-gateway", router_values(plan, s))
        out[f"{s.name}-ms"] = ("llm-d-modelservice", modelservice_values(plan, s))
    if plan.request.monitoring != "none":
        out[f"{plan.pattern.name}-monitoring"] = ("lightrail-monitoring", monitoring_values(plan))
    return out


def monitoring_values(plan: Plan) -> dict:
    rule = monitoring.prometheus_rule(plan)
    board = monitoring.dashboard_configmap(plan)
    return {"name": rule["metadata"]["name"], "groups": rule["spec"]["groups"],
            "dashboard": {"name": board["metadata"]["name"], "labels": board["metadata"]["labels"],
                          "data": board["data"]}}
