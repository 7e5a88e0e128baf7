"""Teardown planning and verification, from what the cluster holds (not from a plan).

A deployment is found by its labels, so teardown works whatever overrides the deploy used.
Helm releases (llmd) are uninstalled — `helmfile destroy` of exactly the releases found —
and every other labelled object is deleted by name: kserve's objects, the HF token Secret,
PVCs (unless kept), objects a chart keeps on uninstall. Objects a controller owns go with
their owner. Objects outside the namespace belong to it when they point into it (KServe's
body-based-routing EnvoyFilter names the router Service `<svc>.<namespace>.svc`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from lightrail.ops import steps as st
from lightrail.ops.objects import (HELM_RELEASE, PATTERN_LABEL, STACK_LABEL, annotations, is_custom, labels, meta,
                                   ref, stub)
from lightrail.ops.target import Target

# Charts whose releases an llmd deploy creates (a release with no objects left is found by these).
LLMD_CHARTS = ("llm-d-infra", "llm-d-router-gateway", "llm-d-modelservice", "body-based-routing",
               "agentgateway-body-routing")
KEEP_POLICY = "helm.sh/resource-policy"


@dataclass
class TeardownPlan:
    steps: list[st.Step]
    removes: list[str]
    kept: list[str] = field(default_factory=list)


def selector(pattern: str | None = None, stack: str | None = None) -> str:
    """Label selector for Lightrail objects (all, or one pattern / stack)."""
    parts = [f"{PATTERN_LABEL}={pattern}"] if pattern else []
    parts.append(f"{STACK_LABEL}={stack}" if stack else STACK_LABEL)
    return ",".join(parts)


def select(objects: list[dict], namespace: str, pattern: str | None = None, stack: str | None = None) -> list[dict]:
    """The labelled objects of the deployment(s) in `namespace`, including those elsewhere that point into it."""
    out = []
    for obj in objects:
        lbl = labels(obj)
        if STACK_LABEL not in lbl or (pattern and lbl.get(PATTERN_LABEL) != pattern) \
                or (stack and lbl.get(STACK_LABEL) != stack):
            continue
        ns = meta(obj).get("namespace")
        if ns == namespace or (ns and f".{namespace}.svc" in json.dumps(obj.get("spec") or {})):
            out.append(obj)
    return out


def orphan_releases(releases: list[dict], pattern: str | None, patterns: list[str]) -> list[str]:
    """Helm releases of our charts named like a deployment's releases (found even with no objects left)."""
    prefixes = [f"{p}-" for p in ([pattern] if pattern else patterns)]
    return [r["name"] for r in releases if any(r["name"].startswith(p) for p in prefixes)
            and any(str(r.get("chart", "")).startswith(f"{c}-") for c in LLMD_CHARTS)]


def plan_teardown(found: list[dict], releases: list[str], target: Target, keep_pvcs: bool = False,
                  timeout: float = 600) -> TeardownPlan:
    removable = [o for o in found if not _controlled(o)]
    kept = [o for o in removable if keep_pvcs and o["kind"] == "PersistentVolumeClaim"]
    removable = [o for o in removable if o not in kept]
    in_release = sorted({annotations(o)[HELM_RELEASE] for o in removable if HELM_RELEASE in annotations(o)})
    names = sorted(set(in_release) | set(releases))
    steps = []
    if names:
        steps.append(st.Step(f"uninstall helm release(s) {', '.join(names)}", tool="helm", timeout=timeout + 30,
                             args=target.helm("uninstall", *names, "--namespace", target.namespace, "--wait",
                                              f"--timeout={int(timeout)}s", "--ignore-not-found")))
    # helm leaves objects marked "keep"; everything else not from a release is deleted by name
    loose = [o for o in removable if HELM_RELEASE not in annotations(o) or annotations(o).get(KEEP_POLICY) == "keep"]
    loose.sort(key=_delete_order)
    if loose:
        steps.append(st.delete(target, [stub(o) for o in loose], f"delete {len(loose)} labelled object(s)",
                               timeout=timeout, wait=False))   # flows.teardown waits, and names what is left
    removes = [f"helm release {r}" for r in names] + [ref(o) for o in removable]
    return TeardownPlan(steps, removes, [ref(o) for o in kept])


def leftovers(objects: list[dict], namespace: str, pattern: str | None = None, stack: str | None = None,
              keep_pvcs: bool = False) -> list[str]:
    """Labelled objects still present after a teardown (children of deleted owners included)."""
    return [ref(o) for o in select(objects, namespace, pattern, stack)
            if not (keep_pvcs and o["kind"] == "PersistentVolumeClaim")]


def _controlled(obj: dict) -> bool:
    return any(o.get("controller") for o in meta(obj).get("ownerReferences") or [])


def _delete_order(obj: dict) -> int:
    """Custom resources first (KServe removes what an LLMInferenceService created), PVCs last."""
    if obj["kind"] == "LLMInferenceService":
        return 0
    if is_custom(obj):
        return 1
    return 3 if obj["kind"] == "PersistentVolumeClaim" else 2
