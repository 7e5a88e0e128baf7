"""Render a plan with the real tools (helmfile/helm or kustomize), validate it, write it out.

Each stack module provides `render(plan, workdir, charts=None) -> Rendered`; this module picks
the stack, validates every object and writes the result only when everything is valid.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lightrail.errors import LightrailError
from lightrail.plan import Plan


@dataclass
class Rendered:
    """Objects in apply order, the inputs the tools were given, and what the user should know."""

    objects: list[dict]
    artifacts: dict[str, str] = field(default_factory=dict)   # relative path -> text (helmfile.yaml, values, kustomization)
    notes: list[str] = field(default_factory=list)
    complete: bool = True   # False when upstream charts were not available (llmd without LIGHTRAIL_CHARTS)


def render(plan: Plan, *, charts: Path | None = None) -> Rendered:
    """Render the plan with its stack's real tools in a scratch directory."""
    if plan.stack == "llmd":
        from lightrail.llmd.render import render as stack_render
    else:
        from lightrail.kserve.render import render as stack_render
    with tempfile.TemporaryDirectory(prefix="lightrail-render-") as tmp:
        return stack_render(plan, Path(tmp), charts=charts)


def to_yaml(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def write(rendered: Rendered, out: Path) -> list[Path]:
    """Write manifests.yaml and the artifacts into `out`, all or nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LightrailError(f"--out {out} exists and is not a directory")
    parent = out.parent if out.parent.exists() else Path.cwd()
    stage = Path(tempfile.mkdtemp(prefix=".lightrail-out-", dir=parent))
    try:
        files = {"manifests.yaml": to_yaml(rendered.objects), **rendered.artifacts}
        for rel, text in files.items():
            path = stage / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return sorted(out / rel for rel in files)
