"""`invoke status`: every Lightrail deployment on the cluster, from the labels its objects carry.

Pure aggregation over listed objects: group by (namespace, pattern, stack); models and
replicas from the model-server workloads (llmd) or LLMInferenceServices (kserve); the endpoint
from the Gateway or KServe's published URL; the newest condition of any object.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from lightrail.ops.objects import (ACCEL_LABEL, PATTERN_LABEL, condition, conditions, deployment_of, is_true, labels,
                                   meta)
from lightrail.smoke.discovery import gateway_url, kserve_endpoint

# Listed by `status` (with the Lightrail label selector); everything else adds nothing to a row.
KINDS = (("apps/v1", "Deployment"), ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
         ("serving.kserve.io/v1alpha2", "LLMInferenceService"), ("gateway.networking.k8s.io/v1", "Gateway"),
         ("gateway.networking.k8s.io/v1", "HTTPRoute"), ("inference.networking.k8s.io/v1", "InferencePool"))
SERVING_LABEL = "llm-d.ai/inference-serving"


@dataclass
class Row:
    namespace: str
    pattern: str
    stack: str
    accel: str
    models: list[str]
    ready: int
    desired: int
    endpoint: str
    age: str
    last_condition: str
    migration: str = ""      # a migration in progress: its phase, weights, since when

    def to_dict(self) -> dict:
        return asdict(self)


def aggregate(objects: list[dict], pods: list[dict], now: datetime, states: list[dict] = ()) -> list[Row]:
    """`states`: the ConfigMaps of migrations in progress; each row of their pattern says where it stands."""
    migrations = {(meta(cm).get("namespace"), labels(cm).get(PATTERN_LABEL)): migration_summary(cm) for cm in states}
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for obj in objects:
        owner = deployment_of(obj)
        if owner and meta(obj).get("namespace"):
            groups.setdefault((meta(obj)["namespace"], *owner), []).append(obj)
    rows = []
    for (ns, pattern, stack), objs in sorted(groups.items()):
        accel = next((labels(o)[ACCEL_LABEL] for o in objs if ACCEL_LABEL in labels(o)), "?")
        models, ready, desired = (_llmd_servers if stack == "llmd" else _kserve_servers)(objs, pods)
        rows.append(Row(ns, pattern, stack, accel, sorted(models), ready, desired, _endpoint(stack, objs),
                        _age(objs, now), _last_condition(objs), migrations.get((ns, pattern), "")))
    return rows


def migration_summary(config_map: dict) -> str:
    """One line from a migration's state ConfigMap (written by lightrail.migrate.state)."""
    try:
        state = json.loads((config_map.get("data") or {})["state.json"])
        line = (f"{state['source']['stack']} -> {state['to']}: phase {state['phase']}, target at {state['weight']}%, "
                f"{state['status']} since {state['updated']} (started {state['since']})")
        return line + (f": {state['reason']}" if state.get("reason") else "")
    except (KeyError, TypeError, ValueError):
        return f"migration state {meta(config_map).get('name')} is unreadable"


def _served_model(workload: dict) -> str:
    template = ((workload.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("leaderTemplate") \
        or (workload.get("spec") or {}).get("template") or {}
    for c in (template.get("spec") or {}).get("containers") or []:
        args = [str(a) for a in c.get("args") or []]
        for flag in ("--served-model-name", "--model"):
            for i, a in enumerate(args):
                if a == flag and i + 1 < len(args):
                    return args[i + 1]
                if a.startswith(flag + "="):
                    return a.split("=", 1)[1]
    return meta(workload).get("name", "?")


def _llmd_servers(objs: list[dict], pods: list[dict]) -> tuple[list[str], int, int]:
    models, ready, desired = [], 0, 0
    for w in objs:
        if w["kind"] not in ("Deployment", "LeaderWorkerSet"):
            continue
        template = (w.get("spec") or {}).get("template") or \
            ((w.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("leaderTemplate") or {}
        if w["kind"] == "Deployment" and (template.get("metadata") or {}).get("labels", {}).get(SERVING_LABEL) != "true":
            continue   # endpoint pickers and routers are not model servers
        models.append(_served_model(w))
        desired += (w.get("spec") or {}).get("replicas", 1)
        ready += (w.get("status") or {}).get("readyReplicas", 0)
    return models, ready, desired


def _kserve_servers(objs: list[dict], pods: list[dict]) -> tuple[list[str], int, int]:
    models, ready, desired = [], 0, 0
    for svc in objs:
        if svc["kind"] != "LLMInferenceService":
            continue
        name, want = meta(svc)["name"], (svc.get("spec") or {}).get("replicas", 1)
        models.append(((svc.get("spec") or {}).get("model") or {}).get("name") or name)
        desired += want
        if is_true(condition(conditions(svc), "Ready")):
            ready += want
            continue
        ready += sum(1 for p in pods if meta(p).get("namespace") == meta(svc).get("namespace")
                     and labels(p).get("app.kubernetes.io/name") == name
                     and labels(p).get("kserve.io/component") == "workload"
                     and is_true(condition((p.get("status") or {}).get("conditions") or [], "Ready")))
    return models, ready, desired


def _endpoint(stack: str, objs: list[dict]) -> str:
    if stack == "llmd":
        gw = next((o for o in objs if o["kind"] == "Gateway"), None)
        if gw is None:
            return "-"
        return gateway_url(gw) or f"no address yet (port-forward to the Service of Gateway {meta(gw)['name']})"
    services = [o for o in objs if o["kind"] == "LLMInferenceService"]
    urls = {kserve_endpoint(s, len(services) > 1) for s in services} - {None}
    return ", ".join(sorted(urls)) or "-"


def _age(objs: list[dict], now: datetime) -> str:
    stamps = [meta(o).get("creationTimestamp") for o in objs if meta(o).get("creationTimestamp")]
    if not stamps:
        return "-"
    seconds = int((now - min(_parse(s) for s in stamps)).total_seconds())
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{hours}h" if days else f"{hours}h{rest // 60}m" if hours else f"{rest // 60}m{rest % 60}s"


def _last_condition(objs: list[dict]) -> str:
    found = []
    for o in objs:
        conds = list(conditions(o))
        for parent in (o.get("status") or {}).get("parents") or []:
            conds += parent.get("conditions") or []
        found += [(c.get("lastTransitionTime") or "", o, c) for c in conds]
    if not found:
        return "-"
    _, o, c = max(found, key=lambda f: f[0])
    text = f"{o['kind']} {meta(o)['name']}: {c.get('type')}={c.get('status')}"
    return text + (f" ({c['reason']})" if c.get("reason") else "")


def _parse(stamp) -> datetime:
    if isinstance(stamp, datetime):
        return stamp
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
