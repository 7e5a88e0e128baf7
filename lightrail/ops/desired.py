"""What a deploy wants on the cluster, from the stack's real render.

kserve: the validated kustomize output. llmd: the validated helmfile output, split by helm
release (a rollback is per release), plus the helmfile state in a work directory that
`helmfile sync` reads. The split comes from one more `helmfile template --output-dir`, which
writes each release's manifests under a directory named after the release.
"""
from __future__ import annotations

from pathlib import Path

from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.llmd.render import helmfile_args, write_state
from lightrail.llmd.values import release_values
from lightrail.ops.deploy import Desired
from lightrail.ops.objects import group, meta
from lightrail.plan import Plan
from lightrail.render import load_manifests, render_validated
from lightrail.settings import TOOLS_BIN


def desired_state(plan: Plan, workdir: Path, charts: Path | None = None) -> Desired:
    rendered = render_validated(plan, charts=charts)
    if plan.stack == "kserve":
        return Desired(objects=rendered.objects)
    if not rendered.complete:
        raise LightrailError("the llmd render is incomplete (upstream charts were not available)",
                             fix="set LIGHTRAIL_CHARTS=DIR, or run where the chart repositories are reachable")
    write_state(plan, workdir, charts)
    files = {str(p): p.read_text() for p in [workdir / "state.yaml", *sorted((workdir / "values").glob("*.yaml"))]}
    by_identity = _release_of_each_object(plan, workdir)
    releases: dict[str, list[dict]] = {r: [] for r in release_values(plan)}
    for obj in rendered.objects:
        release = by_identity.get(_identity(obj))
        if release not in releases:
            raise LightrailError(f"cannot tell which helm release renders {obj['kind']} {meta(obj).get('name')}")
        releases[release].append(obj)
    return Desired(objects=rendered.objects, releases=releases, helmfile=tuple(helmfile_args(plan, workdir)),
                   files=files)


def _identity(obj: dict) -> tuple[str, str, str]:
    return group(obj["apiVersion"]), obj["kind"], meta(obj).get("name", "")


def _release_of_each_object(plan: Plan, workdir: Path) -> dict[tuple[str, str, str], str]:
    out_dir = workdir / "by-release"
    tools.run("helmfile", *helmfile_args(plan, workdir, "template", "--skip-deps", "--output-dir", str(out_dir),
                                         "--output-dir-template", "{{ .OutputDir }}/{{ .Release.Name }}"),
              env={"KUBECTL": str(TOOLS_BIN / "kubectl")})
    found = {}
    for release_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        for manifest in sorted(release_dir.rglob("*.yaml")):
            for obj in load_manifests(manifest.read_text()):
                found[_identity(obj)] = release_dir.name
    return found
