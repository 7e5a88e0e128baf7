"""Is an object ready, and if not, why — from observed API objects only.

A status is trusted only when it describes the object's current spec: `observedGeneration`
(on the status or on the condition) must equal `metadata.generation`. When a workload is not
ready, its pods and events say why: no node with free accelerators, an image that cannot be
pulled, a crash loop (with the last log lines), a missing Secret. Some of these are `fatal`:
waiting longer will not help, so a deploy fails at once instead of at its timeout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from lightrail.ops.objects import condition, conditions, is_true, labels, meta, ref

CRASH_LOOP_FATAL_RESTARTS = 3
LOG_LINES = 5
_PERMANENT_PULL = ("not found", "manifest unknown", "unauthorized", "denied", "invalid reference")
_CONFIG_ERRORS = ("InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull")
_NOT_ACCELERATOR = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class State:
    what: str            # `Kind namespace/name`
    ready: bool
    summary: str         # "2/3 ready", "Programmed", "not created yet"
    reason: str = ""     # why it is not ready (empty when ready, or a note when ready with a caveat)
    fatal: bool = False  # waiting will not fix it


def assess(desired: dict, live: dict | None, pods: Iterable[dict] = (), events: Iterable[dict] = (),
           logs: Mapping[tuple[str, str], str] | None = None) -> State:
    """The readiness of one desired object given its live counterpart and the namespace's pods/events."""
    what = ref(desired)
    if live is None:
        return State(what, False, "not created yet")
    rule = _RULES.get(desired["kind"])
    if rule is None:
        return State(what, True, "exists")
    return rule(what, live, list(pods), list(events), logs or {})


def verdict(states: list[State]) -> str:
    """ready | failed | waiting."""
    if all(s.ready for s in states):
        return "ready"
    return "failed" if any(s.fatal for s in states) else "waiting"


def changes(before: Mapping[str, State], states: list[State]) -> list[State]:
    """The states that differ from the last ones shown (live progress prints only these)."""
    return [s for s in states if before.get(s.what) != s]


def logs_wanted(pods: Iterable[dict]) -> list[tuple[str, str]]:
    """(pod, container) pairs whose previous run's log explains a crash (the executor fetches them)."""
    out = []
    for pod in pods:
        for cs in _container_statuses(pod):
            if cs.get("restartCount", 0) > 0 and (cs.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                out.append((meta(pod)["name"], cs["name"]))
    return out


# ---------------------------------------------------------------------------------------------


def _generation_seen(live: dict, observed: int | None) -> bool:
    generation = meta(live).get("generation")
    return generation is None or observed == generation


def _deployment(what, live, pods, events, logs) -> State:
    spec, status = live.get("spec") or {}, live.get("status") or {}
    want = spec.get("replicas", 1)
    if not _generation_seen(live, status.get("observedGeneration")):
        return State(what, False, "waiting for the controller", "status is for an older generation")
    ready = status.get("readyReplicas", 0)
    summary = f"{ready}/{want} ready"
    progressing = condition(conditions(live), "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        reason, _ = explain(_selected(pods, spec.get("selector")), events, logs, meta(live)["name"])
        return State(what, False, summary, reason or progressing.get("message", "progress deadline exceeded"), True)
    done = all(status.get(k, 0) == want for k in ("updatedReplicas", "availableReplicas", "readyReplicas")) \
        and status.get("replicas", 0) == want
    if done:
        return State(what, True, summary)
    reason, fatal = explain(_selected(pods, spec.get("selector")), events, logs, meta(live)["name"])
    return State(what, False, summary, reason, fatal)


def _leaderworkerset(what, live, pods, events, logs) -> State:
    status = live.get("status") or {}
    want = (live.get("spec") or {}).get("replicas", 1)
    if not _generation_seen(live, status.get("observedGeneration")):
        return State(what, False, "waiting for the controller", "status is for an older generation")
    ready = status.get("readyReplicas", 0)
    summary = f"{ready}/{want} groups ready"
    if ready == want and status.get("updatedReplicas", 0) == want and is_true(condition(conditions(live), "Available")):
        return State(what, True, summary)
    name = meta(live)["name"]
    mine = [p for p in pods if labels(p).get("leaderworkerset.sigs.k8s.io/name") == name]
    reason, fatal = explain(mine, events, logs, name)
    return State(what, False, summary, reason, fatal)


def _llminferenceservice(what, live, pods, events, logs) -> State:
    status = live.get("status") or {}
    if not _generation_seen(live, status.get("observedGeneration")):
        return State(what, False, "waiting for KServe", "status is for an older generation")
    conds = conditions(live)
    name = meta(live)["name"]
    mine = [p for p in pods if labels(p).get("app.kubernetes.io/name") == name
            and labels(p).get("app.kubernetes.io/part-of") == "llminferenceservice"]
    if is_true(condition(conds, "Ready")):
        # KServe sets Ready once its workload is Available, i.e. with fewer replicas than asked for
        # (seen: Ready while the Deployment was 1/2); serving "ready" means every replica serves.
        want = (live.get("spec") or {}).get("replicas", 1)
        serving = sum(1 for p in mine if labels(p).get("kserve.io/component") == "workload" and _pod_ready(p))
        if serving >= want:
            return State(what, True, "Ready")
        reason, fatal = explain([p for p in mine if not _pod_ready(p)], events, logs, name)
        return State(what, False, f"Ready, {serving}/{want} replicas ready",
                     reason or "KServe reports Ready before every replica is", fatal)
    reason, fatal = explain(mine, events, logs, name)
    failing = [c for c in conds if c.get("status") == "False"]
    why = "; ".join(f"{c['type']}: {c.get('message') or c.get('reason', '')}" for c in failing)
    return State(what, False, "not Ready", "; ".join(x for x in (why, reason) if x) or "no Ready condition yet", fatal)


def _gateway(what, live, pods, events, logs) -> State:
    conds = conditions(live)
    programmed = _current(live, condition(conds, "Programmed"))
    if is_true(programmed):
        return State(what, True, "Programmed")
    accepted = _current(live, condition(conds, "Accepted"))
    if programmed and programmed.get("reason") == "AddressNotAssigned" and is_true(accepted):
        # No load balancer in this cluster (kind, bare metal): the gateway works through its Service.
        return State(what, True, "Accepted", "no external address assigned; reach it with a port-forward")
    if accepted and not is_true(accepted):
        return State(what, False, "not Accepted", f"{accepted.get('reason')}: {accepted.get('message', '')}")
    if programmed:
        return State(what, False, "not Programmed", f"{programmed.get('reason')}: {programmed.get('message', '')}")
    return State(what, False, "waiting for the gateway controller", "no current Programmed condition")


def _routed(what, live, pods, events, logs) -> State:
    """HTTPRoute and InferencePool: every parent gateway accepted it and resolved its references."""
    parents = (live.get("status") or {}).get("parents") or []
    if not parents:
        if live["kind"] == "InferencePool":
            return State(what, True, "exists", "the gateway reports no status for it")
        return State(what, False, "not attached", "no gateway has accepted it yet")
    for parent in parents:
        gw = (parent.get("parentRef") or {}).get("name", "?")
        for kind in ("Accepted", "ResolvedRefs"):
            cond = _current(live, condition(parent.get("conditions") or [], kind))
            if cond is None and kind == "ResolvedRefs" and live["kind"] == "InferencePool":
                continue
            if not is_true(cond):
                detail = f"{cond.get('reason')}: {cond.get('message', '')}" if cond else "no current condition"
                return State(what, False, f"not {kind} by {gw}", detail)
    return State(what, True, "Accepted")


def _current(live: dict, cond: dict | None) -> dict | None:
    """A condition, if it describes the current generation."""
    if cond is None or not _generation_seen(live, cond.get("observedGeneration", meta(live).get("generation"))):
        return None
    return cond


_RULES = {
    "Deployment": _deployment,
    "LeaderWorkerSet": _leaderworkerset,
    "LLMInferenceService": _llminferenceservice,
    "Gateway": _gateway,
    "HTTPRoute": _routed,
    "InferencePool": _routed,
}


# ---------------------------------------------------------------------------------------------
# Why pods are not ready


def _selected(pods: list[dict], selector: dict | None) -> list[dict]:
    want = (selector or {}).get("matchLabels") or {}
    return [p for p in pods if want and all(labels(p).get(k) == v for k, v in want.items())]


def _pod_ready(pod: dict) -> bool:
    return not meta(pod).get("deletionTimestamp") and \
        is_true(condition((pod.get("status") or {}).get("conditions") or [], "Ready"))


def _container_statuses(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def _accelerators(pod: dict) -> str:
    asks = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for res, qty in ((c.get("resources") or {}).get("requests") or {}).items():
            if res not in _NOT_ACCELERATOR:
                asks[res] = qty
    return ", ".join(f"{k}: {v}" for k, v in asks.items())


def _warnings(events: list[dict], name_prefix: str) -> list[dict]:
    found = [e for e in events if e.get("type") == "Warning"
             and (e.get("involvedObject") or {}).get("name", "").startswith(name_prefix)]
    return sorted(found, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def explain(pods: list[dict], events: list[dict], logs: Mapping[tuple[str, str], str], owner: str) -> tuple[str, bool]:
    """The most telling reason these pods are not ready, and whether it is fatal."""
    findings: list[tuple[int, str, bool]] = []   # (rank, text, fatal); lower rank is more telling
    for pod in pods:
        if meta(pod).get("deletionTimestamp"):
            continue
        findings.extend(_pod_findings(pod, events, logs))
    if not pods:
        warning = _warnings(events, owner)
        if warning:
            return f"no pods: {warning[-1].get('reason')}: {warning[-1].get('message', '')}", False
        return "no pods yet", False
    if not findings:
        return "", False
    rank, text, fatal = min(findings, key=lambda f: (not f[2], f[0]))
    return text, fatal


def _pod_findings(pod: dict, events: list[dict], logs) -> list[tuple[int, str, bool]]:
    name = meta(pod)["name"]
    out = []
    for cs in _container_statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason, message = waiting.get("reason", ""), waiting.get("message", "")
        if reason in ("ErrImagePull", "ImagePullBackOff"):
            permanent = any(m in message.lower() for m in _PERMANENT_PULL)
            out.append((0, f"pod {name}: cannot pull image {cs.get('image')}: {message or reason}", permanent))
        elif reason in _CONFIG_ERRORS:
            out.append((0, f"pod {name}: container {cs['name']}: {reason}: {message}", True))
        elif reason == "CrashLoopBackOff":
            restarts = cs.get("restartCount", 0)
            last = ((cs.get("lastState") or {}).get("terminated")) or {}
            exit_info = f"; last exit code {last.get('exitCode')} ({last.get('reason', 'Error')})" if last else ""
            text = f"pod {name}: container {cs['name']} is crash-looping ({restarts} restarts{exit_info})"
            tail = (logs.get((name, cs["name"])) or "").rstrip().splitlines()[-LOG_LINES:]
            if tail:
                text += "; last log lines:\n      " + "\n      ".join(tail)
            out.append((1, text, restarts >= CRASH_LOOP_FATAL_RESTARTS))
    status = pod.get("status") or {}
    scheduled = condition(status.get("conditions") or [], "PodScheduled")
    if status.get("phase") == "Pending" and scheduled and scheduled.get("status") == "False":
        asks = _accelerators(pod)
        text = f"pod {name} cannot be scheduled: {scheduled.get('message') or scheduled.get('reason')}"
        if asks:
            text += f" (each pod needs {asks}; check `invoke doctor` for nodes with free accelerators)"
        no_scale_up = any(e.get("reason") == "NotTriggerScaleUp" for e in _warnings_for(events, name))
        out.append((2, text + ("; the cluster autoscaler will not add a node for it" if no_scale_up else ""),
                    no_scale_up))
    if status.get("phase") == "Running" and not out:
        warning = _warnings_for(events, name)
        if warning:
            out.append((3, f"pod {name} is running but not ready: {warning[-1].get('message', '')}", False))
    return out


def _warnings_for(events: list[dict], pod: str) -> list[dict]:
    return [e for e in _warnings(events, pod) if (e.get("involvedObject") or {}).get("name") == pod]
