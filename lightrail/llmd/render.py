"""Render the llmd stack with the real helmfile + helm.

The plan's values go into a scratch directory (state.yaml + one values file per release);
helmfiles/helmfile.yaml.gotmpl turns them into releases, and `helmfile template` renders every
object from the upstream charts: from their pinned repositories, or from LIGHTRAIL_CHARTS.
`offline=True` renders no upstream chart: it checks the composed state with `helmfile build`
(upstream chart sources stubbed, since helmfile resolves OCI charts even to list releases),
validates the values against the charts' values schemas and renders only the releases of our
own charts (helmfiles/charts) — all that can be known without the upstream charts.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from lightrail import tools
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.llmd import charts as local_charts
from lightrail.llmd.values import OWN_CHARTS, bbr_chart, release_values, restricted_deployments
from lightrail.plan import MANAGED_BY, Plan
from lightrail.render import Rendered, dump_yaml, load_manifests
from lightrail.settings import HELMFILES_DIR, TOOLS_BIN

HELMFILE = HELMFILES_DIR / "helmfile.yaml.gotmpl"
# How a user re-runs a written render (`invoke render --out=OUT`) by hand, from OUT/helmfile.
RERUN = (f"cd OUT/helmfile && helmfile --file {HELMFILE} --environment {{provider}} --state-values-file $PWD/state.yaml "
         "--state-values-set valuesDir=$PWD/values {verb}")
POST_RENDERER = HELMFILES_DIR / "post-render-labels"


def stamped_labels(plan: Plan) -> dict[str, str]:
    """The labels the post-renderer adds: the plan's, except managed-by, which stays Helm's.

    Helm adopts an existing object only if it carries `app.kubernetes.io/managed-by: Helm`
    (redeploying after an interrupted teardown); Lightrail finds its objects by lightrail.dev/*.
    """
    return {k: v for k, v in plan.labels.items() if k not in MANAGED_BY}


def chart_refs(plan: Plan, charts: Path | None, stub: Path | None = None) -> tuple[dict, list[dict]]:
    """Chart reference per helmfile.yaml.gotmpl key, and the repositories to declare.

    Our own charts always come from helmfiles/charts. With `charts`, every upstream chart is
    DIR/<name> (a directory, <name>.tgz, or <name>-<version>.tgz as `helm pull` names it), checked
    against its pin (llmd/charts.py), and no repository is needed; with `stub`, every upstream chart is a path under it that is never read
    (offline checks); otherwise each comes from its pinned repository and version.
    """
    pins = load_catalog().versions["charts"]
    by_key = {"infra": "llm-d-infra", "router": "llm-d-router-gateway", "modelservice": "llm-d-modelservice"}
    if plan.body_router:
        by_key["bbr"] = bbr_chart(plan)
    if plan.request.monitoring != "none":
        by_key["monitoring"] = "lightrail-monitoring"
    refs, repos, found = {}, {}, []
    for key, name in sorted(by_key.items()):
        if name not in pins:
            refs[key] = {"chart": str(OWN_CHARTS / name), "version": ""}
        elif stub:
            refs[key] = {"chart": str(stub / name), "version": pins[name]["version"]}
        elif charts:
            candidates = [charts / name, charts / f"{name}.tgz", charts / f"{name}-{pins[name]['version']}.tgz"]
            local = next((p for p in candidates if p.exists()), None)
            if local is None:
                raise LightrailError(f"chart {name} not found in {charts} (looked for "
                                     f"{', '.join(p.name for p in candidates)})",
                                     fix="put the upstream chart there, or point --charts / LIGHTRAIL_CHARTS elsewhere")
            found.append((local, name))
            refs[key] = {"chart": str(local), "version": ""}
        else:
            pin = pins[name]
            repos[name] = {"name": name, "url": pin["repo"].removeprefix("oci://"),
                           "oci": pin["repo"].startswith("oci://")}
            refs[key] = {"chart": f"{name}/{name}", "version": pin["version"]}
    for local, name in found:   # once every chart is found: a missing one is named first
        local_charts.check(local, name, pins[name]["version"])
    return refs, list(repos.values())


def write_state(plan: Plan, workdir: Path, charts: Path | None, stub: Path | None = None) -> dict[str, str]:
    """Write state.yaml and the per-release values files into workdir.

    Returns the artifacts for the user, where the scratch paths are replaced by paths relative
    to the written helmfile/ directory (see RERUN).
    """
    refs, repos = chart_refs(plan, charts, stub)
    values_dir = workdir / "values"
    values_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for release, (_, values) in release_values(plan).items():
        files[f"values/{release}.yaml"] = dump_yaml(values)
    state = {
        "pattern": plan.pattern.name,
        "namespace": plan.namespace,
        "labels": stamped_labels(plan),
        "charts": refs,
        "repositories": repos,
        "bodyBasedRouting": plan.body_router,
        "ownGateway": not plan.gateway.external,
        "servers": [{"name": s.name, "model": s.model} for s in plan.servers],
        "valuesDir": str(values_dir),
        "postRenderer": str(POST_RENDERER),
        "restricted": restricted_deployments(plan),
        "monitoring": plan.request.monitoring != "none",
    }
    for rel, text in {**files, "state.yaml": dump_yaml(state)}.items():
        (workdir / rel).write_text(text)
    files["state.yaml"] = dump_yaml({**state, "valuesDir": "values"})
    return files


def helmfile_args(plan: Plan, workdir: Path, *verb: str) -> list[str]:
    """helmfile's arguments for a verb on this plan's state (also used by deploy/teardown)."""
    return ["--file", str(HELMFILE), "--environment", plan.gateway.provider,
            "--state-values-file", str(workdir / "state.yaml"), *verb]


def render(plan: Plan, workdir: Path, charts: Path | None = None, offline: bool = False) -> Rendered:
    from lightrail.validate import validate_values

    releases = release_values(plan)
    problems = [p for chart, values in releases.values() for p in validate_values(chart, values)]
    if problems:
        raise LightrailError("composed chart values are invalid:\n  " + "\n  ".join(str(p) for p in problems))
    if offline and not charts:
        return _offline(plan, workdir, releases)
    files = write_state(plan, workdir, charts)
    artifacts = {f"helmfile/{k}": v for k, v in files.items()}
    try:
        out = _template(plan, workdir)
    except LightrailError as err:
        if charts is None:
            err.fix = "the chart repositories must be reachable; otherwise set LIGHTRAIL_CHARTS=DIR or use --offline"
        raise
    notes = ["deploy with `invoke deploy`, or by hand: " + RERUN.format(provider=plan.gateway.provider, verb="apply")]
    if offline:   # with charts at hand offline changes nothing but must be said: no repository was asked
        notes.insert(0, f"offline: every upstream chart came from {charts} (checked against the pinned versions); "
                        "no chart repository was contacted")
    return Rendered(objects=load_manifests(out), artifacts=artifacts, notes=notes)


def _template(plan: Plan, workdir: Path, *selectors: str) -> str:
    """`helmfile template` of the state in workdir: every release, or those `selectors` pick."""
    verb = [a for s in selectors for a in ("--selector", s)] + ["template", "--skip-deps"]
    return tools.run("helmfile", *helmfile_args(plan, workdir, *verb), env={"KUBECTL": str(TOOLS_BIN / "kubectl")}).stdout


def _offline(plan: Plan, workdir: Path, releases: dict[str, tuple[str, dict]]) -> Rendered:
    """Without upstream charts: check the helmfile state and render only our own charts' releases."""
    write_state(plan, workdir, None, stub=workdir / "charts-not-fetched")
    built = yaml.safe_load(tools.run("helmfile", *helmfile_args(plan, workdir, "build")).stdout.split("\n", 2)[2])
    got = [r["name"] for r in built["releases"]]
    if got != list(releases):
        raise LightrailError(f"helmfile state has releases {got}, the plan expects {list(releases)}")
    pinned = load_catalog().versions["charts"]
    own = [name for name, (chart, _) in releases.items() if chart not in pinned]
    objects = load_manifests(_template(plan, workdir, *(f"name={r}" for r in own))) if own else []
    files = write_state(plan, workdir, None)   # what the user runs: the real chart sources
    return Rendered(objects=objects, artifacts={f"helmfile/{k}": v for k, v in files.items()}, complete=False, notes=[
        f"offline: checked the helmfile state ({len(got)} releases) and the values against the charts' values "
        f"schemas; rendered only Lightrail's own releases ({', '.join(own) or 'none here'}), not the upstream "
        "charts (set LIGHTRAIL_CHARTS=DIR, or drop --offline where the chart repositories are reachable)",
    ])
