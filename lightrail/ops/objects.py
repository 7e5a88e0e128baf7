"""Small facts about Kubernetes API objects (plain dicts), shared by every ops decision."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from kubernetes.utils.quantity import parse_quantity

from lightrail.plan import LABEL_PREFIX

FIELD_MANAGER = "lightrail"
PATTERN_LABEL = f"{LABEL_PREFIX}/pattern"
STACK_LABEL = f"{LABEL_PREFIX}/stack"   # on every object a deploy creates (Helm rewrites managed-by)
ACCEL_LABEL = f"{LABEL_PREFIX}/accel"
MIGRATION_LABEL = f"{LABEL_PREFIX}/migration"   # on what a migration in progress owns: its front routes, its state
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
HELM_RELEASE = "meta.helm.sh/release-name"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"   # set by gateway controllers on what they make
# Groups served by the API server itself; every other group needs a CRD.
BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io", "networking.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "certificates.k8s.io", "resource.k8s.io",
    "events.k8s.io", "flowcontrol.apiserver.k8s.io", "apiregistration.k8s.io",
})
# Set by the API server; never part of what we send.
_SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                    "deletionTimestamp", "deletionGracePeriodSeconds")


def group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def version(api_version: str) -> str:
    return api_version.rsplit("/", 1)[-1]


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def labels(obj: dict) -> dict:
    return meta(obj).get("labels") or {}


def annotations(obj: dict) -> dict:
    return meta(obj).get("annotations") or {}


def key(obj: dict) -> tuple[str, str, str, str]:
    """Identity across API versions: (group, kind, namespace, name)."""
    m = meta(obj)
    return group(obj["apiVersion"]), obj["kind"], m.get("namespace") or "", m.get("name") or ""


def ref(obj: dict) -> str:
    """How users name an object: `Kind namespace/name`."""
    m = meta(obj)
    where = f"{m['namespace']}/" if m.get("namespace") else ""
    return f"{obj['kind']} {where}{m.get('name', '?')}"


def is_custom(obj_or_api_version) -> bool:
    api_version = obj_or_api_version if isinstance(obj_or_api_version, str) else obj_or_api_version["apiVersion"]
    return group(api_version) not in BUILTIN_GROUPS


def conditions(obj: dict) -> list[dict]:
    return (obj.get("status") or {}).get("conditions") or []


def condition(conds: list[dict], kind: str) -> dict | None:
    return next((c for c in conds if c.get("type") == kind), None)


def is_true(cond: dict | None) -> bool:
    return bool(cond) and cond.get("status") == "True"


def generated(obj: dict) -> bool:
    """Made by a controller from another object (a ReplicaSet's pods, a Gateway's Deployment and Service,
    a Service's Endpoints), which copies that object's labels: never ours to change or delete."""
    m = meta(obj)
    return (any(o.get("controller") for o in m.get("ownerReferences") or [])
            or GATEWAY_NAME_LABEL in (m.get("labels") or {}) or obj.get("kind") in ("Endpoints", "EndpointSlice"))


def deployment_of(obj: dict) -> tuple[str, str] | None:
    """(pattern, stack) of the Lightrail deployment an object belongs to, from its labels."""
    lbl = labels(obj)
    return (lbl[PATTERN_LABEL], lbl[STACK_LABEL]) if PATTERN_LABEL in lbl and STACK_LABEL in lbl else None


def manager(obj: dict) -> str:
    """Who manages a live object: its helm release, its controlling owner or its field managers."""
    release = annotations(obj).get(HELM_RELEASE)
    if release:
        return f"helm release {release}"
    owner = next((o for o in meta(obj).get("ownerReferences") or [] if o.get("controller")), None)
    if owner:
        return f"{owner.get('kind')} {owner.get('name')}"
    managers = sorted({f.get("manager", "?") for f in meta(obj).get("managedFields") or []})
    return ", ".join(managers) or (labels(obj).get(MANAGED_BY_LABEL) or "unknown")


def sendable(obj: dict) -> dict:
    """An object as it can be applied again: without status, server-set metadata, and null fields (a
    read can hold `null` where the schema wants an object, e.g. an LLMInferenceService's
    spec.router.route, which the API server then refuses to take back)."""
    out = {k: _no_nulls(v) for k, v in obj.items() if k != "status" and v is not None}
    m = {k: v for k, v in meta(obj).items() if k not in _SERVER_METADATA}
    annotations_ = {k: v for k, v in (m.get("annotations") or {}).items()
                    if k != "kubectl.kubernetes.io/last-applied-configuration"}
    if annotations_:
        m["annotations"] = annotations_
    else:
        m.pop("annotations", None)
    out["metadata"] = m
    return out


def _no_nulls(value):
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def stub(obj: dict) -> dict:
    """Just enough of an object to name it (what `kubectl delete -f -` needs)."""
    m = meta(obj)
    out_meta = {"name": m["name"], **({"namespace": m["namespace"]} if m.get("namespace") else {})}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": out_meta}


def difference(live, desired, path: str = "") -> str | None:
    """The first path where `live` does not hold what `desired` says, or None when it does.

    Desired is what we would send; live has server defaults on top, so only the fields we
    set are compared. Quantities compare by value ("1000m" == "1"), int-or-string by text, and
    an empty or false value matches a field the server omitted.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return None if not desired and live is None else path or "."
        for k, v in desired.items():
            found = difference(live.get(k), v, f"{path}.{k}" if path else k)
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list):
            return None if not desired and live is None else path
        if len(live) != len(desired):
            return path
        for i, (lv, dv) in enumerate(zip(live, desired)):
            found = difference(lv, dv, f"{path}[{i}]")
            if found:
                return found
        return None
    if desired is None or (live is None and desired in ("", 0, False)):
        return None
    if live == desired or (live is not None and str(live) == str(desired)):
        return None
    return None if _same_quantity(live, desired) else path


def _same_quantity(a, b) -> bool:
    if not isinstance(a, (str, int, float)) or not isinstance(b, (str, int, float)):
        return False
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (ValueError, InvalidOperation, TypeError):
        return False


def quantity(value) -> Decimal:
    """A Kubernetes quantity as a number (0 when absent or unreadable)."""
    try:
        return parse_quantity(value) if value not in (None, "") else Decimal(0)
    except (ValueError, InvalidOperation, TypeError):
        return Decimal(0)
