"""Render the kserve stack: write the overlay, run one real `kubectl kustomize`."""
from __future__ import annotations

from pathlib import Path

from lightrail import tools
from lightrail.kserve.compose import write_overlay
from lightrail.plan import Plan
from lightrail.render import Rendered, load_manifests


def render(plan: Plan, workdir: Path) -> Rendered:
    files = write_overlay(plan, workdir)
    # Self-contained: the same build a user runs by hand on the written kustomize/ directory.
    out = tools.run("kubectl", "kustomize", str(workdir)).stdout
    objects = load_manifests(out)
    artifacts = {f"kustomize/{k}": v for k, v in files.items()}
    notes = [f"apply with: kubectl apply --server-side -f manifests.yaml (namespace {plan.namespace})"]
    elsewhere = sorted({o["metadata"]["namespace"] for o in objects} - {plan.namespace})
    if elsewhere:
        notes.append(f"also writes into namespace {', '.join(elsewhere)} (the body-based router's EnvoyFilter "
                     "must sit beside KServe's ingress gateway): the applying user needs rights there")
    return Rendered(objects=objects, artifacts=artifacts, notes=notes)
