"""`invoke doctor`: can this plan run on this cluster? One check per question, each with a fix.

Pure functions over `Facts` (what was observed: CRDs, GatewayClasses, nodes, pods, Secret
names) and the locally installed tool versions. `deploy` runs the same checks and refuses to
start while any of them fails.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from lightrail.catalog import load_catalog
from lightrail.ops.objects import (annotations, condition, conditions, group, is_custom, is_true, labels, meta,
                                   quantity, version)
from lightrail.plan import KSERVE_GATEWAY, Plan
from lightrail.weights import shared_claim_problem

OK, WARN, FAIL = "ok", "warn", "fail"
# The CRDs each stack needs whatever the pattern: (group, kind, version, versions.yaml crds key).
GATEWAY = ("gateway.networking.k8s.io", "Gateway", "v1", "gateway-api")
HTTPROUTE = ("gateway.networking.k8s.io", "HTTPRoute", "v1", "gateway-api")
INFERENCEPOOL = ("inference.networking.k8s.io", "InferencePool", "v1", "inference-extension")
LWS = ("leaderworkerset.x-k8s.io", "LeaderWorkerSet", "v1", "lws")
# Model aliases on llmd; the endpoint picker looks for this CRD once, when it starts.
MODEL_REWRITE = ("llm-d.ai", "InferenceModelRewrite", "v1alpha2", "llm-d-router")
BUNDLE_ANNOTATIONS = {"gateway-api": "gateway.networking.k8s.io/bundle-version",
                      "inference-extension": "inference.networking.k8s.io/bundle-version"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str          # ok | warn | fail
    detail: str
    fix: str = ""


@dataclass
class Facts:
    """What doctor needs to know about the cluster (observed by the executor, or recorded in tests)."""

    context: str
    server_version: str | None = None
    error: str = ""                       # why the cluster could not be reached
    crds: list[dict] = field(default_factory=list)
    gateway_classes: list[dict] = field(default_factory=list)
    gateways: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    pods: list[dict] = field(default_factory=list)       # every non-terminated pod (for used capacity)
    secrets: list[str] = field(default_factory=list)     # Secret names in the target namespace (never data)
    claims: list[dict] = field(default_factory=list)      # PersistentVolumeClaims in the target namespace


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


# ---------------------------------------------------------------------------------------------
# Tools


def tool_checks(found: dict[str, str | None]) -> list[Check]:
    """Installed helm/helmfile/kubectl versions against patterns/versions.yaml."""
    pins = load_catalog().versions["tools"]
    out = []
    for tool in ("helm", "helmfile", "kubectl"):
        want = str(pins[tool]["version"]).lstrip("v")
        got = (found.get(tool) or "").lstrip("v")
        if not got:
            out.append(Check(f"tool {tool}", FAIL, "not installed in .tools/bin", "run scripts/setup"))
        elif got != want:
            out.append(Check(f"tool {tool}", FAIL, f"{got}, pinned {want}", "run scripts/setup"))
        else:
            out.append(Check(f"tool {tool}", OK, got))
    return out


# ---------------------------------------------------------------------------------------------
# Cluster


def cluster_checks(facts: Facts, stack: str, provider: str, plan: Plan | None = None,
                   objects: list[dict] | None = None, token_given: bool = False) -> list[Check]:
    """Every cluster check for a stack (and, with a plan, for that plan's objects and pods)."""
    if facts.error:
        return [Check("cluster", FAIL, f"context {facts.context}: {facts.error}",
                      "check the context with `kubectl --context=NAME get nodes`, or pass --kube-context")]
    out = [Check("cluster", OK, f"context {facts.context}, Kubernetes {facts.server_version}")]
    out += crd_checks(facts.crds, required_crds(stack, plan, objects or []))
    out.append(gateway_check(facts, stack, provider if plan is None else plan.gateway.provider))
    if plan is not None:
        out.append(capacity_check(plan, facts.nodes, facts.pods))
        out.append(token_check(plan, facts.secrets, token_given))
        out += weights_checks(plan, facts.claims)
    return out


def weights_checks(plan: Plan, claims: list[dict]) -> list[Check]:
    """Existing claims named by --weights=pvc:CLAIM: present, and mountable by every pod of the model."""
    out = []
    for server in plan.servers:
        if not (server.weights and server.weights.kind == "pvc"):
            continue
        claim = server.weights.claim
        found = next((c for c in claims if meta(c).get("name") == claim), None)
        name = f"weights {claim}"
        if found is None:
            out.append(Check(name, FAIL, f"claim {claim} not found in namespace {plan.namespace}",
                             f"create it with the weights under /{server.weights.uri.split('/', 3)[3]}, or use --weights=hf"))
            continue
        modes = list((found.get("spec") or {}).get("accessModes") or [])
        problem = shared_claim_problem(modes, server.pods, claim)
        out.append(Check(name, FAIL, problem, "use --replicas=1, or a ReadOnlyMany / ReadWriteMany claim") if problem
                   else Check(name, OK, f"{'/'.join(modes) or 'no access mode'}, {server.pods} pod(s)"))
    return out


def required_crds(stack: str, plan: Plan | None, objects: list[dict]) -> list[tuple[str, str, str, str]]:
    """CRDs as (group, kind, version, pin key): the stack's, LWS for multi-node, and every custom kind rendered."""
    need = [GATEWAY, HTTPROUTE, INFERENCEPOOL]
    if stack == "kserve":
        api = plan.request.kserve_api if plan else "v1alpha2"
        need.append(("serving.kserve.io", "LLMInferenceService", api, "kserve-llmisvc"))
    if plan is not None and any(s.multinode for s in plan.servers):
        need.append(LWS)
    if plan is not None and stack == "llmd" and any(s.aliases for s in plan.servers):
        need.append(MODEL_REWRITE)
    for obj in objects:
        if is_custom(obj):
            item = (group(obj["apiVersion"]), obj["kind"], version(obj["apiVersion"]), "")
            if not any(n[:3] == item[:3] for n in need):
                need.append(item)
    return need


def crd_checks(crds: list[dict], need: list[tuple[str, str, str, str]]) -> list[Check]:
    pins = load_catalog().versions["crds"]
    out = []
    for grp, kind, ver, pin_key in need:
        name = f"CRD {kind} {grp}/{ver}"
        crd = next((c for c in crds if (c.get("spec") or {}).get("group") == grp
                    and ((c.get("spec") or {}).get("names") or {}).get("kind") == kind), None)
        fix = "run `invoke prereqs`" if pin_key in ("gateway-api", "inference-extension", "lws", "llm-d-router") \
            else f"install the component that provides {kind} ({grp})"
        if crd is None:
            out.append(Check(name, FAIL, "not installed", fix))
            continue
        served = [v["name"] for v in crd["spec"].get("versions") or [] if v.get("served")]
        if ver not in served:
            out.append(Check(name, FAIL, f"installed, but serves {', '.join(served) or 'no version'}", fix))
            continue
        if not is_true(condition(conditions(crd), "Established")):
            out.append(Check(name, FAIL, "installed but not Established yet", "wait a few seconds and retry"))
            continue
        bundle = annotations(crd).get(BUNDLE_ANNOTATIONS.get(pin_key, ""), "")
        pinned = str((pins.get(pin_key) or {}).get("version", ""))
        if bundle and pinned and semver(bundle) < semver(pinned):
            out.append(Check(name, WARN, f"{bundle}, older than the pinned {pinned}", "run `invoke prereqs`"))
        else:
            out.append(Check(name, OK, f"served{f' ({bundle})' if bundle else ''}"))
    return out


def gateway_check(facts: Facts, stack: str, provider: str) -> Check:
    """llmd: the provider's GatewayClass is accepted. kserve: KServe's ingress Gateway exists."""
    if stack == "kserve":
        gw = next((g for g in facts.gateways if (meta(g).get("namespace"), meta(g).get("name")) == KSERVE_GATEWAY), None)
        if gw is None:
            return Check("KServe ingress gateway", FAIL, f"Gateway {'/'.join(KSERVE_GATEWAY)} not found",
                         "install KServe with its LLMInferenceService controller and Istio (see docs/operations.md)")
        return Check("KServe ingress gateway", OK, f"Gateway {'/'.join(KSERVE_GATEWAY)}")
    class_name = load_catalog().gateways[provider]["class"]
    gc = next((g for g in facts.gateway_classes if meta(g).get("name") == class_name), None)
    name = f"GatewayClass {class_name}"
    if gc is None:
        fix = "install Istio with the inference extension (`invoke prereqs --istio`)" if provider == "istio" \
            else f"install the {provider} gateway controller"
        return Check(name, FAIL, f"not found (provider {provider})", fix)
    accepted = condition(conditions(gc), "Accepted")
    if not is_true(accepted):
        return Check(name, FAIL, f"not accepted by its controller: {(accepted or {}).get('message', 'no status')}",
                     f"check the {provider} controller's logs")
    return Check(name, OK, f"accepted ({(gc.get('spec') or {}).get('controllerName', '?')})")


def capacity_check(plan: Plan, nodes: list[dict], pods: list[dict], beside: bool = False) -> Check:
    """Do the model-server pods fit on nodes matching their selectors, in allocatable minus requested?

    `beside`: the deployment's current pods stay (a migration's target runs beside its source), so
    what they request counts as used; otherwise a redeploy replaces them and their room is free."""
    server = plan.servers[0]   # every server of a plan has the same per-pod shape
    need = {res: quantity(q) for res, q in server.resources.items()}
    accel = {r: q for r, q in need.items() if r not in ("cpu", "memory")}
    selector = dict(server.node_selector)
    used = _requested_by_node(pods, plan, beside)
    fits, matching = 0, 0
    for node in nodes:
        if not _schedulable(node, selector, server.tolerations):
            continue
        matching += 1
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        free = {r: quantity(allocatable.get(r)) - used.get(meta(node)["name"], {}).get(r, Decimal(0)) for r in need}
        fits += max(0, min(int(free[r] // q) if q else 1 << 30 for r, q in need.items()))
    want = plan.pods_total
    shape = ", ".join(f"{r}: {q}" for r, q in server.resources.items())
    where = ", ".join(f"{k}={v}" for k, v in selector.items())
    nodes_text = f"{matching} schedulable node(s)" + (f" matching {where}" if where else "")
    if fits >= want:
        return Check("capacity", OK, f"{want} model-server pod(s) of {shape} fit ({fits} would) on {nodes_text}")
    missing = want - fits
    what = ", ".join(f"{int(q) * missing} {r}" for r, q in accel.items()) or f"room for {missing} pod(s) of {shape}"
    return Check("capacity", FAIL, f"only {fits} of {want} model-server pod(s) fit on the {nodes_text}; missing {what}",
                 f"add {missing} pod(s)' worth of nodes" + (f" matching {where}" if where else "")
                 + f" (each pod needs {shape}), or lower --replicas")


def token_check(plan: Plan, secrets: list[str], token_given: bool) -> Check:
    hf = [s.model for s in plan.servers if s.weights and s.weights.kind in ("hf", "pvc-cache")]
    if not hf:
        return Check("HF token", OK, "not needed (no model is downloaded from Hugging Face)")
    if token_given:
        return Check("HF token", OK, "given; deploy stores it in Secret lightrail-hf-token")
    if plan.hf_secret and plan.hf_secret in secrets:
        return Check("HF token", OK, f"Secret {plan.hf_secret} exists")
    return Check("HF token", WARN, f"none given and no Secret lightrail-hf-token in {plan.namespace}: gated models "
                                   f"({', '.join(hf)}) will fail to download",
                 "export HF_TOKEN=... or pass --hf-token-file=FILE")


def _requested_by_node(pods: list[dict], plan: Plan, count_own: bool = False) -> dict[str, dict[str, Decimal]]:
    """Resources requested on each node by running pods, except this deployment's own model servers
    (unless `count_own`)."""
    mine = {s.name for s in plan.servers}
    out: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node or phase in ("Succeeded", "Failed"):
            continue
        lbl = labels(pod)
        if not count_own and meta(pod).get("namespace") == plan.namespace and (
                lbl.get("llm-d.ai/model") in mine or lbl.get("app.kubernetes.io/name") in mine):
            continue
        totals = out.setdefault(node, {})
        for c in (pod.get("spec") or {}).get("containers") or []:
            for res, q in ((c.get("resources") or {}).get("requests") or {}).items():
                totals[res] = totals.get(res, Decimal(0)) + quantity(q)
    return out


def _schedulable(node: dict, selector: dict, tolerations) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    if not is_true(condition(conditions(node), "Ready")):
        return False
    if any(labels(node).get(k) != v for k, v in selector.items()):
        return False
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return False
    return True


def _tolerates(toleration, taint: dict) -> bool:
    if toleration.get("key") not in (None, "", taint.get("key")):
        return False
    if toleration.get("effect") not in (None, "", taint.get("effect")):
        return False
    if toleration.get("operator") == "Exists":
        return True
    return toleration.get("value") == taint.get("value")


def semver(text: str) -> tuple[int, ...]:
    """(1, 6, 1) from 'v1.6.1', for comparing pinned and installed versions."""
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])
