"""Plan: what a deployment of pattern P on accelerator A with stack S will create.

Pure values computed from the catalog and the user's overrides. Every later step (render,
deploy, smoke, bench, teardown) reads the plan instead of re-deriving names or sizes.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from lightrail import __version__, aliases, engines, podsecurity, weights
from lightrail.catalog import STACKS, Catalog, Pattern, load_catalog
from lightrail.errors import LightrailError, choose
from lightrail.tls import Tls, tls
from lightrail.vllm_args import check_extra_args
from lightrail.weights import Weights

LABEL_PREFIX = "lightrail.dev"
# On a kustomize unit's objects that can outlive their deployment (the body-based router on KServe's
# shared gateway, which a migration hands over with the Gateway): the unit's name, as helm's
# release annotation names an llmd release's objects.
UNIT_LABEL = f"{LABEL_PREFIX}/unit"
MANAGED_BY = {"app.kubernetes.io/managed-by": "lightrail"}
RESERVED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
HF_TOKEN_SECRET = "lightrail-hf-token"
VLLM_PORT = 8000
KSERVE_MODEL_DIR = "/mnt/models"   # where KServe's storage initializer (or model car) puts the weights
KSERVE_GATEWAY = ("kserve", "kserve-ingress-gateway")   # KServe's shared ingress Gateway (its default config)
# `replicas` is an int32 in Deployment, LeaderWorkerSet and LLMInferenceService: the API server's
# bound, checked before any arithmetic (pods, accelerators, cost) uses the number.
MAX_REPLICAS = 2**31 - 1
MONITORING = ("none", "prometheus", "gmp")   # lightrail/monitoring.py
_HF_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Request:
    """What the user asked for: a pattern on an accelerator with a stack, plus overrides."""

    pattern: str
    accel: str
    stack: str = "llmd"
    models: tuple[str, ...] = ()
    replicas: int | None = None
    namespace: str = "lightrail"
    gpu_type: str | None = None
    topology: str | None = None
    provider: str = "istio"
    kserve_api: str = "v1alpha2"
    kserve_tls: bool = False   # KServe's enableLLMInferenceServiceTLS (LIGHTRAIL_KSERVE_TLS); off, as KServe defaults
    extra_args: tuple[str, ...] = ()
    hf_token: bool = False     # a token will be provided: mount secret HF_TOKEN_SECRET (never the value)
    front: str = ""            # "namespace/name" of an existing Gateway: served through Lightrail's front route
                               # on it (what `invoke migrate` leaves); the stack then creates no Gateway or route
    engine: str = "vllm"       # inference engine (patterns/engines.yaml)
    aliases: tuple[tuple[str, str], ...] = ()   # (friendly name, served model) pairs (lightrail/aliases.py)
    weights: str = "hf"        # hf | pvc | pvc:CLAIM[/PATH] | oci:IMAGE (lightrail/weights.py)
    cache_size: str | None = None   # download volume / created claim size; default: what the accelerators hold
    pod_security: str | None = None   # Pod Security level; None: the strictest the pattern's pods meet
    monitoring: str = "none"          # scrape targets + alerts for: none | prometheus (Operator) | gmp
    tls_secret: str | None = None     # TLS ingress: the Secret the HTTPS listener serves (lightrail/tls.py)
    cert_manager_issuer: str | None = None   # ... or the cert-manager Issuer that writes it
    hostname: str | None = None       # the HTTPS listener's hostname


@dataclass(frozen=True)
class Multinode:
    """One LeaderWorkerSet group: `size` pods running data-parallel (and expert-parallel) ranks."""

    size: int
    data_parallel: int
    data_parallel_local: int
    tensor_parallel: int
    expert_parallel: bool


@dataclass(frozen=True)
class ModelServer:
    """The pods serving one model, and the InferencePool / endpoint picker in front of them."""

    name: str                 # Kubernetes name shared by every object of this model
    model: str                # served model name: what clients send in the body's `model`
    source: str               # weights: hf://org/name, a path in the container, or "" (sim)
    image: str
    replicas: int
    args: tuple[str, ...]     # container args besides model, served name and port
    env: Mapping[str, str]
    resources: Mapping[str, str]   # per pod; requests == limits
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, str], ...]
    tensor_parallel: int
    startup: Mapping[str, int]   # startup probe periodSeconds / failureThreshold: the accelerator's budget
    multinode: Multinode | None = None
    command: tuple[str, ...] = ()   # entrypoint when the image's default is not the server (sim, other engines)
    engine: str = "vllm"            # non-vLLM engines: `command` + `args` are the whole command line
    aliases: tuple[str, ...] = ()   # other names clients may send for `model`
    weights: Weights | None = None  # where the weights come from (None: a path in the image, or the simulator)

    @property
    def pods(self) -> int:
        return self.replicas * (self.multinode.size if self.multinode else 1)

    @property
    def pool(self) -> str:
        return self.name

    @property
    def epp(self) -> str:
        return f"{self.name}-epp"


@dataclass(frozen=True)
class Gateway:
    name: str
    provider: str
    class_name: str
    namespace: str = ""       # set when the Gateway is not the deployment's own (Request.front)

    @property
    def external(self) -> bool:
        return bool(self.namespace)


@dataclass(frozen=True)
class Unit:
    """One step of the apply order: a helm release or a kustomize unit, and what it creates."""

    name: str
    tool: str                 # "helm" (via helmfile) or "kustomize"
    source: str               # chart name or kustomize directory
    version: str
    objects: Mapping[str, int]


@dataclass(frozen=True)
class Cost:
    per_hour: float
    currency: str
    basis: str                # how it was computed, for the user to check

    @property
    def per_day(self) -> float:
        return self.per_hour * 24


@dataclass(frozen=True)
class Plan:
    request: Request
    pattern: Pattern
    accel_type: str           # "l4", "v6e-2x2", "cpu", "sim"
    labels: Mapping[str, str]
    gateway: Gateway
    servers: tuple[ModelServer, ...]
    scorers: Mapping[str, int]
    body_based_routing: bool
    epp_image: str
    cost: Cost
    versions: Mapping[str, Any]
    units: tuple[Unit, ...] = ()
    pod_security: str = "restricted"   # the Pod Security level the namespace enforces (lightrail/podsecurity.py)
    tls: Tls | None = None             # the gateway's HTTPS listener (lightrail/tls.py); None: plain HTTP

    @property
    def namespace(self) -> str:
        return self.request.namespace

    @property
    def stack(self) -> str:
        return self.request.stack

    @property
    def accel(self) -> str:
        return self.request.accel

    @property
    def hf_secret(self) -> str | None:
        """The Secret holding HF_TOKEN that model servers read, when the user provides a token."""
        needs = any(s.weights and s.weights.kind in ("hf", "pvc-cache") for s in self.servers)
        return HF_TOKEN_SECRET if self.request.hf_token and needs else None

    @property
    def served_models(self) -> tuple[str, ...]:
        """The names clients put in a request's `model` (one per server)."""
        return tuple(self.client_model(s) for s in self.servers)

    def client_model(self, server: ModelServer) -> str:
        """The model name clients send to a server: behind body-based routing on KServe's shared
        gateway (a kserve deployment, or one a migration left there) KServe's publisher-qualified
        name, which its routes match and which is unique per namespace (two namespaces serving the
        same model never match the same requests). On kserve an alias is the model's name
        (spec.model.name), which vLLM answers with."""
        name = server.aliases[0] if self.stack == "kserve" and server.aliases else server.model
        return client_model(self.request, self.body_based_routing, name)

    @property
    def body_router(self) -> bool:
        """Whether the deployment brings its own body-based router: behind a front route the kept
        Gateway's router (the source's, handed over with the Gateway) already fills the model header."""
        return self.body_based_routing and not self.gateway.external

    @property
    def namespace_labels(self) -> dict[str, str]:
        """Labels the deployment's namespace carries: the Pod Security Admission level."""
        return podsecurity.namespace_labels(self.pod_security, self.versions["kubernetes"])

    @property
    def replicas_total(self) -> int:
        return sum(s.replicas for s in self.servers)

    @property
    def pods_total(self) -> int:
        return sum(s.pods for s in self.servers)

    @property
    def accelerator_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for s in self.servers:
            for res, qty in s.resources.items():
                if res not in ("cpu", "memory"):
                    totals[res] = totals.get(res, 0) + int(qty) * s.pods
        return totals

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(sorted({s.image for s in self.servers} | {self.epp_image}))

    @property
    def objects(self) -> dict[str, int]:
        """Expected objects by kind over all units."""
        totals: dict[str, int] = {}
        for unit in self.units:
            for kind, n in unit.objects.items():
                totals[kind] = totals.get(kind, 0) + n
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON-able data (what `invoke plan --output=json` prints)."""
        req = asdict(self.request)
        return {
            "pattern": self.pattern.name,
            "accel": self.accel,
            "accel_type": self.accel_type,
            "stack": self.stack,
            "namespace": self.namespace,
            "request": req,
            "labels": dict(self.labels),
            "gateway": asdict(self.gateway),
            "servers": [_server_dict(s) for s in self.servers],
            "router": {"scorers": dict(self.scorers), "body_based_routing": self.body_based_routing,
                       "epp_image": self.epp_image},
            "units": [{**asdict(u), "objects": dict(u.objects)} for u in self.units],
            "objects": self.objects,
            "images": list(self.images),
            "replicas_total": self.replicas_total,
            "pods_total": self.pods_total,
            "accelerators_total": self.accelerator_totals,
            "pod_security": {"level": self.pod_security, "namespace_labels": self.namespace_labels},
            "tls": asdict(self.tls) if self.tls else None,
            "cost": {"per_hour": round(self.cost.per_hour, 2), "per_day": round(self.cost.per_day, 2),
                     "currency": self.cost.currency, "basis": self.cost.basis},
        }


def client_model(request: Request, body_based_routing: bool, model: str) -> str:
    """See Plan.client_model (also the name a non-vLLM engine is told to serve). The Gateway decides,
    whichever stack serves behind it: KServe's shared gateway routes by publisher-qualified names, an
    llmd-made Gateway by the plain ones, so behind a front route clients keep the names they sent."""
    on_kserve_gateway = request.front == "/".join(KSERVE_GATEWAY) if request.front else request.stack == "kserve"
    if body_based_routing and on_kserve_gateway:
        return f"publishers/{request.namespace}/models/{model}"
    return model


def _server_dict(s: ModelServer) -> dict[str, Any]:
    d = asdict(s)
    d.update(env=dict(s.env), startup=dict(s.startup), resources=dict(s.resources), node_selector=dict(s.node_selector),
             tolerations=[dict(t) for t in s.tolerations], args=list(s.args), command=list(s.command),
             aliases=list(s.aliases), pods=s.pods)
    return d


# ---------------------------------------------------------------------------------------------
# Building a plan


def build_plan(request: Request, catalog: Catalog | None = None) -> Plan:
    """Check the request against the catalog and compute the plan, or raise LightrailError."""
    catalog = catalog or load_catalog()
    pattern = catalog.pattern(request.pattern)
    accel = catalog.accelerator(request.accel)
    choose("stack", request.stack, STACKS)
    reason = pattern.unsupported_reason(request.accel, request.stack)
    if reason:
        raise LightrailError(
            f"pattern {pattern.name!r} is not supported on accel={request.accel} stack={request.stack}: {reason}",
            fix=f"supported: {', '.join(supported_combinations(pattern.name, catalog))}",
        )
    _check_namespace(request.namespace)
    if request.stack == "llmd":
        choose("gateway provider", request.provider, catalog.gateways)
    choose("KServe API version", request.kserve_api, ("v1alpha2", "v1alpha1"))
    choose("monitoring", request.monitoring, MONITORING)
    if request.monitoring == "gmp":
        raise LightrailError(
            "--monitoring=gmp is not offered yet: llm-d-modelservice v0.4.12 makes only Prometheus Operator "
            "PodMonitors (no GMP PodMonitoring for vLLM), KServe makes no monitors, and the GMP kinds "
            "(monitoring.googleapis.com PodMonitoring, Rules) have no CRDs in LIGHTRAIL_SCHEMAS to validate against",
            fix="valid: none, prometheus")
    if request.replicas is not None and (not isinstance(request.replicas, int) or isinstance(request.replicas, bool)
                                         or not 1 <= request.replicas <= MAX_REPLICAS):
        raise LightrailError(f"replicas must be a whole number from 1 to {MAX_REPLICAS}, got {request.replicas!r}")

    engine = engines.check(catalog, request.engine, pattern, request.accel, request.stack, request.extra_args,
                           request.kserve_tls)
    check_extra_args(request.extra_args, pattern.vllm_args, pattern.name)
    settings = dict(pattern.accelerators.get(request.accel, {}))
    models = _models(request, pattern, accel, engine)
    replicas = request.replicas or pattern.replicas
    shape = _shape(request, pattern, accel, settings)
    image = catalog.image(accel["image"] if request.engine == engines.DEFAULT
                          else engine["accelerators"][request.accel]["image"])
    args = _args(pattern, accel, shape, request.extra_args)
    env = dict(accel.get("env", {})) if request.engine == engines.DEFAULT else {}
    names = _server_names(pattern.name, models)
    weights_source = (*weights.parse(request.weights), weights.check_cache_size(request.cache_size))
    servers = tuple(
        _engine_server(request, engine, _weights(request, accel, shape, ModelServer(
            name=name, model=model, source=_source(model, accel), image=image, replicas=replicas,
            args=args, env=env, resources=shape["resources"], node_selector=shape["node_selector"],
            tolerations=tuple(accel.get("tolerations", ())), tensor_parallel=shape["tp"],
            startup=dict(accel["startup"]), multinode=shape["multinode"], command=tuple(accel.get("command", ())),
        ), weights_source, len(models)), pattern)
        for name, model in zip(names, models)
    )
    servers = aliases.assign(servers, request.aliases, stack=request.stack, pattern=pattern, engine=request.engine,
                             engine_spec=engine)
    labels = {
        **MANAGED_BY,
        f"{LABEL_PREFIX}/pattern": pattern.name,
        f"{LABEL_PREFIX}/stack": request.stack,
        f"{LABEL_PREFIX}/accel": request.accel,
        f"{LABEL_PREFIX}/version": __version__,
    }
    provider = request.provider if request.stack == "llmd" else "istio"
    gateway = Gateway(name=f"{pattern.name}-gateway", provider=provider,
                      class_name=catalog.gateways[provider]["class"])
    if request.front:
        if request.tls_secret or request.cert_manager_issuer:
            raise LightrailError("a deployment served through a front route keeps the Gateway's listeners as they are: "
                                 "--tls-secret and --cert-manager-issuer apply to a deployment's own Gateway")
        gw_namespace, gw_name = _gateway_ref(request.front)
        gateway = replace(gateway, name=gw_name, namespace=gw_namespace)
    plan = Plan(
        request=request, pattern=pattern, accel_type=shape["type"], labels=labels, gateway=gateway,
        servers=servers, scorers=pattern.scorers, body_based_routing=pattern.body_based_routing,
        epp_image=catalog.image("epp"), cost=_cost(servers, shape, catalog), versions=catalog.versions,
        pod_security=podsecurity.level(request.pod_security, pattern.pod_security.get(request.stack)),
        tls=tls(request.tls_secret, request.cert_manager_issuer, request.hostname, gateway.name, request.stack,
                pattern.body_based_routing),
    )
    return replace(plan, units=tuple(stack_units(plan)))


def front_route(server: ModelServer) -> str:
    """The HTTPRoute Lightrail owns in front of a model's pool(s) while and after it migrates."""
    return f"{server.name}-front"


def _gateway_ref(ref: str) -> tuple[str, str]:
    parts = ref.split("/")
    if len(parts) != 2 or not all(_DNS_LABEL.match(p) for p in parts):
        raise LightrailError(f"gateway reference must be NAMESPACE/NAME (DNS labels), got {ref!r}")
    return parts[0], parts[1]


def stack_units(plan: Plan) -> list[Unit]:
    """The stack decides how the plan becomes releases or kustomize units, in apply order."""
    if plan.stack == "llmd":
        from lightrail.llmd.units import units
    else:
        from lightrail.kserve.units import units
    return units(plan)


def supported_combinations(pattern: str, catalog: Catalog | None = None) -> list[str]:
    catalog = catalog or load_catalog()
    p = catalog.pattern(pattern)
    return [f"{a}/{s}" for a in catalog.accelerators for s in STACKS if not p.unsupported_reason(a, s)]


def _check_namespace(namespace: str) -> None:
    check_namespace_name(namespace)
    if namespace in RESERVED_NAMESPACES:
        raise LightrailError(f"refusing to deploy into {namespace!r}; choose your own namespace, e.g. --namespace=lightrail")


def check_namespace_name(namespace: str) -> None:
    if not _DNS_LABEL.match(namespace or ""):
        raise LightrailError(f"namespace {namespace!r} is not a valid Kubernetes name: 1 to 63 lowercase letters, "
                             "digits or '-', starting and ending with a letter or digit")


def _models(request: Request, pattern: Pattern, accel: Mapping[str, Any], engine: Mapping[str, Any]) -> tuple[str, ...]:
    if request.models:
        models = tuple(request.models)
    else:
        swap = accel.get("models", {})
        models = tuple(engines.model_swap(engine, swap.get(m, m)) for m in pattern.models)
    for m in models:
        if not (_HF_MODEL.match(m) or m.startswith(("/", "./", "../"))) or ".." in m.split("/"):
            raise LightrailError(f"model {m!r} is not a Hugging Face id (org/name) or a local path in the container "
                                 "(/path or ./path, without '..')")
    if len(set(models)) != len(models):
        raise LightrailError(f"model names must be distinct, got {', '.join(models)}")
    if len(models) < pattern.min_models:
        raise LightrailError(f"pattern {pattern.name!r} needs at least {pattern.min_models} models, got {len(models)}")
    if pattern.max_models is not None and len(models) > pattern.max_models:
        raise LightrailError(
            f"pattern {pattern.name!r} serves {pattern.max_models} model, got {len(models)}",
            fix="use --pattern=multimodel for several models behind one gateway",
        )
    return models


def _source(model: str, accel: Mapping[str, Any]) -> str:
    if accel.get("simulator"):
        return ""
    return model if model.startswith(("/", "./", "../")) else f"hf://{model}"


def _engine_server(request: Request, engine: Mapping[str, Any], server: ModelServer, pattern: Pattern) -> ModelServer:
    """A non-vLLM server's whole command line from the engine's catalog entry (vLLM's is the stacks').

    What the engine loads: on kserve the directory KServe puts the weights in; on llmd a Hugging
    Face id the engine downloads itself, or the path in the container.
    """
    if request.engine == engines.DEFAULT:
        return server
    if request.stack == "kserve":
        ref, kind = KSERVE_MODEL_DIR, "path"
    elif server.weights:
        ref, kind = server.weights.load, ("path" if server.weights.load.startswith("/") else "hf")
    else:
        ref, kind = server.source, "path"
    if server.weights and kind == "path" and not any("{model}" in a for a in engine["args"]):
        raise LightrailError(f"--inference-engine={request.engine} names the model by what it loads (it takes no "
                             f"served name), so it would answer as {ref}; valid: --weights=hf")
    served = client_model(request, pattern.body_based_routing, server.model)
    command, args = engines.command_line(engine, request.accel, model=served, ref=ref, ref_kind=kind,
                                         port=VLLM_PORT, tp=server.tensor_parallel, args=pattern.vllm_args)
    return replace(server, command=command, args=args, engine=request.engine)


def _weights(request: Request, accel: Mapping[str, Any], shape: dict, server: ModelServer, source: tuple,
             models: int) -> ModelServer:
    """The server with its weights source (--weights); a path in the image and the simulator have none."""
    kind, arg, cache_size = source
    if not server.source or not server.source.startswith("hf://"):
        if kind != "hf" or cache_size:
            what = "the simulator loads no weights" if not server.source else \
                f"model {server.model!r} is a path inside the image"
            raise LightrailError(f"--weights/--cache-size do not apply: {what}", fix="drop them, or give an org/name model")
        return server
    found = weights.resolve(kind, arg, stack=request.stack, model=server.model, server=server.name, pods=server.pods,
                            models=models, default_cache=_default_cache(accel, shape, server), cache_size=cache_size)
    return replace(server, source=found.uri, weights=found)


def _default_cache(accel: Mapping[str, Any], shape: dict, server: ModelServer) -> str:
    """What a download volume must hold (llm-d-modelservice's emptyDir defaults to 5Mi): a checkpoint
    fits in the memory of the accelerators serving it (RAM on CPU), and every pod of a multi-node
    group downloads the whole checkpoint."""
    if "resource" not in accel:
        return server.resources["memory"]
    per_unit = accel["types"][shape["type"]]["memory_gib"] if "types" in accel else accel["memory_gib"]
    units = int(server.resources[accel["resource"]]) * (server.multinode.size if server.multinode else 1)
    return f"{per_unit * units}Gi"


def _slug(model: str) -> str:
    base = model.rstrip("/").split("/")[-1].lower()
    return re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:40].strip("-") or "model"


def _server_names(pattern: str, models: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for model in models:
        name = f"{pattern}-{_slug(model)}"
        n = 2
        while name in names:
            name = f"{pattern}-{_slug(model)}-{n}"
            n += 1
        names.append(name)
    return names


def _shape(request: Request, pattern: Pattern, accel: Mapping[str, Any], settings: dict) -> dict:
    """Per-pod resources, node selectors, tensor parallelism and multinode layout."""
    pod = dict(accel.get("pod", {}))
    resources = {"cpu": str(pod.get("cpu", "1")), "memory": str(pod.get("memory", "1Gi"))}
    selector: dict[str, str] = {}
    tp, hosts, per_pod, accel_type = 1, 1, 0, request.accel
    if request.gpu_type and request.accel != "gpu":
        raise LightrailError(f"--gpu-type applies to --accel=gpu only (got accel={request.accel})")
    if request.topology and request.accel != "tpu":
        raise LightrailError(f"--topology applies to --accel=tpu only (got accel={request.accel})")
    if request.accel == "gpu":
        accel_type = choose("GPU type", request.gpu_type or settings.get("type") or accel["default_type"], accel["types"])
        per_pod = int(settings.get("count", 1))
        hosts = int(settings.get("nodes", 1))
        selector[accel["node_selector_key"]] = accel["types"][accel_type]["node_label"]
        tp = per_pod if not pattern.multinode else 1
    elif request.accel == "tpu":
        topology = choose("TPU v6e topology", request.topology or settings.get("topology") or accel["default_topology"],
                          accel["topologies"])
        topo = accel["topologies"][topology]
        hosts = int(topo["hosts"])
        if hosts > 1:
            single = [t for t, v in accel["topologies"].items() if v["hosts"] == 1]
            raise LightrailError(
                f"TPU topology {topology} spans {hosts} hosts; Lightrail runs one vLLM per TPU host "
                "(a multi-host slice needs one vLLM over Ray across its hosts, see docs/patterns/moe.md)",
                fix=f"use one of {', '.join(single)}",
            )
        per_pod = tp = int(topo["chips"])
        accel_type = f"v6e-{topology}"
        selector.update(accel["node_selector"])
        selector[accel["topology_key"]] = topology
    if per_pod:
        resources[accel["resource"]] = str(per_pod)
    multinode = None
    if pattern.multinode:
        multinode = Multinode(size=hosts, data_parallel=per_pod * hosts, data_parallel_local=per_pod,
                              tensor_parallel=tp, expert_parallel=True)
    return {"resources": resources, "node_selector": selector, "tp": tp, "type": accel_type,
            "multinode": multinode, "per_pod": per_pod}


def _args(pattern: Pattern, accel: Mapping[str, Any], shape: dict, extra: tuple[str, ...]) -> tuple[str, ...]:
    """Container args: the pattern's vLLM flags plus the parallelism the accelerator dictates."""
    if accel.get("simulator"):
        args = list(accel.get("args", ())) + [a for a in pattern.vllm_args if a.startswith("--max-model-len")]
    else:
        args = list(pattern.vllm_args)
        if shape["tp"] > 1:
            args.append(f"--tensor-parallel-size={shape['tp']}")
        mn = shape["multinode"]
        if mn:
            args += [f"--data-parallel-size={mn.data_parallel}", f"--data-parallel-size-local={mn.data_parallel_local}"]
            if mn.expert_parallel and "--enable-expert-parallel" not in args:
                args.append("--enable-expert-parallel")
    layout = {a.split("=", 1)[0]: a for a in args if a.startswith("--data-parallel-size")}   # the LWS layout
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if flag == "--tensor-parallel-size" and arg != f"--tensor-parallel-size={shape['tp']}":
            raise LightrailError(
                f"{arg} conflicts with the accelerator: tensor-parallel size must be {shape['tp']} "
                f"(the {shape['type']} chips per pod)"
            )
        if flag in layout and arg != layout[flag]:
            raise LightrailError(f"{arg} conflicts with the multi-node layout; valid: {layout[flag]}")
        args = [a for a in args if a.split("=", 1)[0] != flag] + [arg]
    return tuple(args)


def _quantity(q: str) -> float:
    """CPU cores or GiB from a Kubernetes quantity ("100m", "8", "128Mi", "32Gi")."""
    units = {"m": 1e-3, "Ki": 1 / 2**20, "Mi": 1 / 2**10, "Gi": 1.0, "Ti": 2**10}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def _cost(servers: tuple[ModelServer, ...], shape: dict, catalog: Catalog) -> Cost:
    prices = catalog.prices
    total, parts = 0.0, []
    for s in servers:
        cpu = _quantity(s.resources["cpu"]) * s.pods
        mem = _quantity(s.resources["memory"]) * s.pods
        total += cpu * prices["cpu"]["per_vcpu_hour"] + mem * prices["cpu"]["per_gib_hour"]
        for res, qty in s.resources.items():
            if res in ("cpu", "memory"):
                continue
            table = prices["accelerators"][res]
            key = shape["type"] if res == "nvidia.com/gpu" else "v6e"
            n = int(qty) * s.pods
            total += n * table[key]
            parts.append(f"{n} x {res} {key} @ {table[key]}/h")
    parts.append("pod CPU and memory at patterns/prices.yaml rates; model servers only")
    return Cost(per_hour=total, currency=prices["currency"], basis="; ".join(parts))
