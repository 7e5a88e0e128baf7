"""What a deploy wants on the cluster, from the stack's real render.

kserve: the validated kustomize output. llmd: the validated helmfile output, split by helm
release (a rollback is per release), plus the helmfile state that `helmfile sync` reads, kept
in a directory that outlives the command (`kept_state`) so the commands a dry run prints can be
run as printed. The split comes from one more `helmfile template --output-dir` in a scratch
directory, which writes each release's manifests under a directory named after the release.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import yaml

from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.llmd.render import helmfile_args, write_state
from lightrail.llmd.values import release_values
from lightrail.ops.deploy import Desired
from lightrail.ops.objects import group, meta
from lightrail.plan import Plan
from lightrail.render import dump_yaml, load_manifests, render_validated
from lightrail.settings import TOOLS_BIN, cache_dir


def desired_state(plan: Plan, charts: Path | None = None) -> Desired:
    """Rendered and validated; tasks call it before they connect, so a bad render has asked the cluster nothing."""
    rendered = render_validated(plan, charts=charts)
    if plan.stack == "kserve":
        return Desired(objects=rendered.objects)
    if not rendered.complete:
        raise LightrailError("the llmd render is incomplete (upstream charts were not available)",
                             fix="set LIGHTRAIL_CHARTS=DIR, or run where the chart repositories are reachable")
    kept = kept_state(plan, charts)
    files = {str(p): p.read_text() for p in [kept / "state.yaml", *sorted((kept / "values").glob("*.yaml"))]}
    with tempfile.TemporaryDirectory(prefix="lightrail-releases-") as work:
        by_identity = _release_of_each_object(plan, kept, Path(work))
    releases: dict[str, list[dict]] = {r: [] for r in release_values(plan)}
    for obj in rendered.objects:
        release = by_identity.get(_identity(obj))
        if release not in releases:
            raise LightrailError(f"cannot tell which helm release renders {obj['kind']} {meta(obj).get('name')}")
        releases[release].append(obj)
    return Desired(objects=rendered.objects, releases=releases, helmfile=tuple(helmfile_args(plan, kept)),
                   files=files, inputs=kept)


def kept_state(plan: Plan, charts: Path | None) -> Path:
    """helmfile's inputs for this plan (state.yaml, values/) in ~/.cache/lightrail/helmfile/<digest of their content>.

    Same plan and charts, same directory, so a dry run names the files its real run reads. No
    secret is in them: the HF token reaches the cluster through the API only. A kept directory
    whose files differ from what they should be (edited, cut short) is replaced, never used.
    """
    root = cache_dir("helmfile")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        digest = hashlib.sha256(json.dumps(write_state(plan, staging, charts), sort_keys=True).encode()).hexdigest()
        kept = root / digest[:20]
        state = yaml.safe_load((staging / "state.yaml").read_text())   # it names the values directory it reads
        (staging / "state.yaml").write_text(dump_yaml({**state, "valuesDir": str(kept / "values")}))
        wanted = _contents(staging)
        if _contents(kept) != wanted:
            shutil.rmtree(kept, ignore_errors=True)
            try:
                staging.rename(kept)
            except OSError:   # another run kept it in between: fine if it kept the same files
                if _contents(kept) != wanted:
                    raise LightrailError(f"cannot keep the helmfile inputs in {kept}: another run is writing there",
                                         fix="run the command again") from None
        return kept
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _contents(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        return {}
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def _identity(obj: dict) -> tuple[str, str, str]:
    return group(obj["apiVersion"]), obj["kind"], meta(obj).get("name", "")


def _release_of_each_object(plan: Plan, state: Path, workdir: Path) -> dict[tuple[str, str, str], str]:
    out_dir = workdir / "by-release"
    tools.run("helmfile", *helmfile_args(plan, state, "template", "--skip-deps", "--output-dir", str(out_dir),
                                         "--output-dir-template", "{{ .OutputDir }}/{{ .Release.Name }}"),
              env={"KUBECTL": str(TOOLS_BIN / "kubectl")})
    found = {}
    for release_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        for manifest in sorted(release_dir.rglob("*.yaml")):
            for obj in load_manifests(manifest.read_text()):
                found[_identity(obj)] = release_dir.name
    return found
