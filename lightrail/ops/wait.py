"""Follow watch events until every object is ready, one fails for good, or time runs out.

The events come from `KubeCluster.watch` (or a recorded list in tests); each one updates a
snapshot of the namespace, the snapshot is assessed by `readiness`, and every change of an
object's state is printed as it happens.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

from lightrail.errors import LightrailError
from lightrail.ops import readiness
from lightrail.ops.objects import key, meta


class NotReady(LightrailError):
    """Objects that did not become ready; the message names each one and why."""

    def __init__(self, states: list[readiness.State], why: str):
        self.states = states
        bad = [s for s in states if not s.ready]
        lines = "\n  ".join(f"{s.what}: {s.summary}" + (f" — {s.reason}" if s.reason else "") for s in bad)
        super().__init__(f"{len(bad)} object(s) not ready ({why}):\n  {lines}")


def follow(objects: list[dict], events: Iterable[tuple[str, dict | None]], timeout: float,
           out: Callable[[str], None], logs_for: Callable[[str, str, str], str] | None = None,
           clock: Callable[[], float] = time.monotonic,
           update: Callable[[str], None] = lambda detail: None) -> list[readiness.State]:
    """Consume events until a verdict; return the ready states or raise NotReady. `update` gets "N/M ready"."""
    start = clock()
    live: dict[tuple, dict] = {}
    pods: dict[tuple[str, str], dict] = {}
    seen_events: dict[str, dict] = {}
    logs: dict[tuple[str, str], str] = {}
    fetched: set[tuple] = set()
    shown: dict[str, readiness.State] = {}
    states: list[readiness.State] = []
    for kind, obj in events:
        if obj is not None and kind in ("ADDED", "MODIFIED", "DELETED"):
            _record(kind, obj, live, pods, seen_events)
        elif kind == "ERROR":
            out(f"  watch interrupted ({(obj or {}).get('message', '')}); resuming")
        if logs_for:
            for pod_name, container in readiness.logs_wanted(pods.values()):
                pod = next(p for p in pods.values() if meta(p)["name"] == pod_name)
                marker = (meta(pod).get("namespace"), pod_name, container, _restarts(pod, container))
                if marker not in fetched:
                    fetched.add(marker)
                    logs[(pod_name, container)] = logs_for(marker[0], pod_name, container)
        states = [readiness.assess(o, live.get(key(o)), _in(pods, o), seen_events.values(), logs) for o in objects]
        elapsed = clock() - start
        for s in readiness.changes(shown, states):
            mark = "ready  " if s.ready else "waiting"
            out(f"  {elapsed:5.0f}s {mark} {s.what}: {s.summary}" + (f" — {s.reason}" if s.reason else ""))
            shown[s.what] = s
        update(f"{sum(s.ready for s in states)}/{len(states)} ready")
        verdict = readiness.verdict(states)
        if verdict == "ready":
            return states
        if verdict == "failed":
            raise NotReady(states, "failed")
        if elapsed >= timeout:
            raise NotReady(states, f"timed out after {timeout:.0f} s")
    raise NotReady(states or [readiness.State(key(o)[1], False, "no events") for o in objects], "the watch ended")


def watch_specs(objects: list[dict]) -> list[tuple[str, str, str]]:
    """What to watch for these objects: their kinds, and pods and events of their namespaces."""
    specs = [(o["apiVersion"], o["kind"], meta(o).get("namespace", "")) for o in objects]
    for ns in dict.fromkeys(meta(o).get("namespace", "") for o in objects):
        specs += [("v1", "Pod", ns), ("v1", "Event", ns)]
    return list(dict.fromkeys(specs))


def _record(kind: str, obj: dict, live: dict, pods: dict, seen_events: dict) -> None:
    m = meta(obj)
    if obj.get("kind") == "Pod":
        slot, index = pods, (m.get("namespace"), m.get("name"))
    elif obj.get("kind") == "Event":
        slot, index = seen_events, m.get("uid") or m.get("name")
    else:
        slot, index = live, key(obj)
    if kind == "DELETED":
        slot.pop(index, None)
    else:
        slot[index] = obj


def _in(pods: dict, obj: dict) -> list[dict]:
    ns = meta(obj).get("namespace")
    return [p for (pns, _), p in pods.items() if pns == ns]


def _restarts(pod: dict, container: str) -> int:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return cs.get("restartCount", 0)
    return 0
