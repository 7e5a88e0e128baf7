"""--no-surge: a side's pods leave their pool (the gateway sends them nothing new), drain, then go;
their room goes to the other side. Pods picked so that the workload's own scale-down agrees."""
from __future__ import annotations

import json
import time

from lightrail.migrate.context import Context
from lightrail.migrate.plan import Migration, Op
from lightrail.migrate.routes import pool_name
from lightrail.ops.objects import FIELD_MANAGER, LABEL_PREFIX, annotations, labels, meta
from lightrail.plan import Plan
from lightrail.smoke.discovery import server_pod_labels

RETIRED_LABEL = f"{LABEL_PREFIX}/retired"          # on a pod taken out of its pool: <pattern>-<stack>
RETIRED_AT = f"{LABEL_PREFIX}/retired-at"          # when (epoch seconds): its drain counts from then
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"   # a ReplicaSet scaling down deletes it first
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"        # LWS deletes the highest groups first


def live(pod: dict) -> bool:
    m = meta(pod)
    return (pod.get("status") or {}).get("phase") == "Running" and not (m.get("deletion_timestamp")
                                                                        or m.get("deletionTimestamp"))


def ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def to_retire(pods: list[dict], keep: int, multinode: bool) -> list[dict]:
    """Which running pods of one pool leave it so that `keep` replicas stay: whole LWS groups from the
    highest index (the ones LWS deletes when scaled down), else the surplus, not-ready ones first."""
    pods = [p for p in pods if live(p)]
    if multinode:
        return [p for p in pods if int(labels(p).get(GROUP_INDEX, "0")) >= keep]
    ranked = sorted(pods, key=lambda p: (ready(p), meta(p)["name"]))
    return ranked[:max(0, len(pods) - keep)]


def retire(m: Migration, op: Op, ctx: Context) -> None:
    """Take pods out of the side's pool by removing a pool-selector label: the gateway sends them no new
    request while those in flight finish. Marked with the time, so the drain counts from then."""
    plan = m.side(op.side)
    for server in plan.servers:
        selector = server_pod_labels(plan, server)
        pods = ctx.cluster.list("v1", "Pod", m.namespace, ",".join(f"{k}={v}" for k, v in selector.items()))
        gone = to_retire(pods, op.replicas, server.multinode is not None)
        key = next(iter(selector))
        released = _workload_releasing(gone, key, m.namespace, ctx)
        stay = [meta(p)["name"] for p in pods if live(p) and p not in gone]
        if gone and stay:    # a scale-down deletes the lowest cost first: never these, whatever else it finds
            ctx.cluster.run("kubectl", ctx.target.kubectl(
                "annotate", "pod", *stay, "-n", m.namespace, "--overwrite", f"{DELETION_COST}=1000"), None, 60)
        for pod in gone:
            name = meta(pod)["name"]
            ctx.out(f"    pod {name} leaves pool {pool_name(plan, server)} (label {key} removed)")
            ctx.cluster.run("kubectl", ctx.target.kubectl(
                "annotate", "pod", name, "-n", m.namespace, "--overwrite", f"{RETIRED_AT}={time.time():.0f}",
                f"{DELETION_COST}=-1000"), None, 60)
            ctx.cluster.run("kubectl", ctx.target.kubectl(
                "label", "pod", name, "-n", m.namespace, "--overwrite", f"{key}-", f"{RETIRED_LABEL}={_retired(m, plan)}"),
                None, 60)
        if released is not None:
            _scale_now(released, op.replicas, m.namespace, ctx)
        if not gone:
            ctx.out(f"    pool {pool_name(plan, server)} holds {op.replicas} replica(s) or fewer already")


def release(m: Migration, op: Op, ctx: Context) -> None:
    """Delete the side's retired pods once their drain is over (their room goes to the other side); a
    scale-down may have deleted them already."""
    plan = m.side(op.side)
    pods = ctx.cluster.list("v1", "Pod", m.namespace, f"{RETIRED_LABEL}={_retired(m, plan)}")
    pods = [p for p in pods if not (meta(p).get("deletion_timestamp") or meta(p).get("deletionTimestamp"))]
    if not pods:
        ctx.out("    no retired pod left")
        return
    since = min(float(annotations(p).get(RETIRED_AT) or 0) for p in pods)
    left = since + op.seconds - time.time()
    if left > 0:
        ctx.wait(f"drain the retired pods ({left:.0f} s left)", left)
    names = [meta(p)["name"] for p in pods]
    ctx.out(f"    deleting {', '.join(names)}")
    ctx.cluster.run("kubectl", ctx.target.kubectl("delete", "pod", *names, "-n", m.namespace, "--ignore-not-found",
                                                  "--wait=false"), None, 120)


def _controller(obj: dict | None) -> tuple[str, str] | None:
    refs = meta(obj or {}).get("ownerReferences") or meta(obj or {}).get("owner_references") or []
    return next(((r["kind"], r["name"]) for r in refs if r.get("controller")), None)


def _workload_releasing(pods: list[dict], key: str, namespace: str, ctx: Context) -> tuple[str, str] | None:
    """The Deployment (or the LLMInferenceService over it) whose ReplicaSet selects on `key`: removing
    the label makes the ReplicaSet let the pods go and start replacements at once. Those must be scaled
    away before they get Ready and join the pool (a model server takes minutes; kwok, a moment): the
    pods that stay carry the highest deletion cost, so the scale-down takes the replacement. None when
    the pods stay owned (LWS groups): the scale-down after the drain deletes them."""
    owner = _controller(pods[0]) if pods else None
    if owner is None or owner[0] != "ReplicaSet":
        return None
    rs = ctx.cluster.get("apps/v1", "ReplicaSet", owner[1], namespace)
    if key not in (((rs or {}).get("spec") or {}).get("selector") or {}).get("matchLabels", {}):
        return None
    deployment = _controller(rs)
    if deployment is None or deployment[0] != "Deployment":
        return None
    top = _controller(ctx.cluster.get("apps/v1", "Deployment", deployment[1], namespace))
    return top if top is not None and top[0] == "LLMInferenceService" else deployment


def _scale_now(workload: tuple[str, str], replicas: int, namespace: str, ctx: Context) -> None:
    kind, name = workload
    ctx.out(f"    {kind} {name} scaled to {replicas} at once: the replacement its ReplicaSet starts goes before it serves")
    if kind == "Deployment":
        args = ("scale", "deployment", name, f"--replicas={replicas}")
    else:
        args = ("patch", "llminferenceservice", name, "--type=merge", f"--field-manager={FIELD_MANAGER}",
                "-p", json.dumps({"spec": {"replicas": replicas}}))
    ctx.cluster.run("kubectl", ctx.target.kubectl(*args, "-n", namespace), None, 60)


def _retired(m: Migration, plan: Plan) -> str:
    return f"{m.pattern}-{plan.stack}"
