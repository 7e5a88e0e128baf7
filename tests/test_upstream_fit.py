"""Renders that validate but would not work upstream (issue 8): each test reads rendered objects."""
import shutil

import pytest
import yaml

from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.render import render
from lightrail.settings import charts_dir, schemas_dir

CATALOG = load_catalog()
CHARTS = charts_dir()
needs_charts = pytest.mark.skipif(CHARTS is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
needs_schemas = pytest.mark.skipif(schemas_dir() is None, reason="no upstream data: set LIGHTRAIL_SCHEMAS=DIR")


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def main_containers(objects):
    """The model-server container of every serving pod template (Deployment, LWS leader, LLMInferenceService)."""
    for o in objects:
        if o["kind"] == "Deployment" and "llm-d.ai/model" in o["spec"]["template"]["metadata"]["labels"]:
            yield o["spec"]["template"]["spec"]["containers"][0]
        elif o["kind"] == "LeaderWorkerSet":
            yield o["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
        elif o["kind"] == "LLMInferenceService":
            yield o["spec"]["template"]["containers"][0]


def startup_seconds(container):
    probe = container["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


@needs_charts
@pytest.mark.parametrize("accel", ["gpu", "tpu", "cpu", "sim"])
def test_one_startup_budget_per_accelerator_on_both_stacks(accel):
    budget = CATALOG.accelerators[accel]["startup"]
    seconds = {}
    for stack in ("llmd", "kserve"):
        objects = render(build_plan(Request("baseline", accel, stack)), charts=CHARTS).objects
        (main,) = main_containers(objects)
        assert {k: main["startupProbe"][k] for k in budget} == dict(budget), stack
        assert main["startupProbe"]["httpGet"]["path"] == "/health"
        seconds[stack] = startup_seconds(main)
    assert seconds["llmd"] == seconds["kserve"]


@needs_schemas
def test_tpu_startup_outlasts_xla_warmup_and_kserves_preset():
    """KServe's preset allows 60 x 10 s; XLA warm-up alone can pass 10 minutes (the llm-d TPU guide: 60 x 30 s)."""
    docs = yaml.safe_load_all((schemas_dir() / "kserve-presets" / "llmisvcconfig-v0.20.0.yaml").read_text())
    template = next(d for d in docs if d and d["metadata"]["name"] == "kserve-config-llm-template")
    kserve_default = startup_seconds(template["spec"]["template"]["containers"][0])
    (isvc,) = of_kind(render(build_plan(Request("caching", "tpu", "kserve"))).objects, "LLMInferenceService")
    seconds = startup_seconds(isvc["spec"]["template"]["containers"][0])
    assert kserve_default == 600 and seconds >= 60 * 30 > kserve_default


def test_headless_lws_workers_get_no_http_probe():
    """KServe's data-parallel workers run `--headless`: an HTTP startup probe there would never pass."""
    (isvc,) = of_kind(render(build_plan(Request("moe", "gpu", "kserve"))).objects, "LLMInferenceService")
    assert "startupProbe" in isvc["spec"]["template"]["containers"][0]
    assert "startupProbe" not in isvc["spec"]["worker"]["containers"][0]


@needs_charts
@pytest.mark.parametrize("pattern,accel", [("multimodel", "sim"), ("moe", "gpu")])
def test_helm_owned_objects_keep_helms_managed_by_label(pattern, accel):
    """Helm adopts an existing object (a redeploy after an interrupted teardown) only when its
    app.kubernetes.io/managed-by is `Helm`; Lightrail's own objects are found by lightrail.dev/*."""
    plan = build_plan(Request(pattern, accel, "llmd"))
    objects = render(plan, charts=CHARTS).objects
    ours = {k: v for k, v in plan.labels.items() if k.startswith("lightrail.dev/")}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/managed-by", "Helm") == "Helm", f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.items() >= ours.items()
    assert any(o["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "Helm" for o in objects)


def route_matches(objects, schemas):
    """Every (path match, model header) -> backend of the routes on KServe's shared gateway: ours
    (any HTTPRoute in the render) and the one KServe makes per LLMInferenceService from its preset."""
    from lightrail.testing.presets import preset, templated

    kserve_route = preset(schemas, "kserve-config-llm-router-route")["spec"]["router"]["route"]["http"]["spec"]
    routes = [o["spec"] for o in of_kind(objects, "HTTPRoute")]
    routes += [templated(kserve_route, i) for i in of_kind(objects, "LLMInferenceService")]
    out = []
    for route in routes:
        for rule in route["rules"]:
            for match in rule["matches"]:
                path = match.get("path", {})
                headers = tuple(sorted((h["name"], h["value"]) for h in match.get("headers", [])))
                out.append(((path.get("type"), path.get("value"), headers), rule["backendRefs"][0]["name"]))
    return out


@needs_schemas
@pytest.mark.parametrize("accel", ["gpu", "sim"])
def test_same_multimodel_in_two_namespaces_never_share_a_route_match(accel):
    """Gateway API gives identical matches on one gateway to the oldest route: one tenant would
    silently get the other's traffic. Deployed twice, no two rules may match the same requests."""
    seen: dict = {}
    for namespace in ("team-a", "team-b"):
        plan = build_plan(Request("multimodel", accel, "kserve", namespace=namespace))
        objects = render(plan).objects
        for match, backend in route_matches(objects, schemas_dir()):
            assert match not in seen, f"{namespace} {backend} and {seen[match]} match the same requests: {match}"
            seen[match] = f"{namespace} {backend}"
        # what clients send reaches this namespace's pool
        for server, client in zip(plan.servers, plan.served_models):
            key = ("Exact", "/v1/chat/completions", (("X-Gateway-Model-Name", client),))
            assert seen[key] == f"{namespace} {server.name}-inference-pool"


# --- local charts are the pinned ones -----------------------------------------------------------


def charts_copy(tmp_path, change=None):
    """LIGHTRAIL_CHARTS-style directory: the shared archives, with `change(name, members)` applied
    (members: {path in the archive: bytes}); returns the directory."""
    import io
    import tarfile

    out = tmp_path / "charts"
    out.mkdir()
    for archive in sorted(CHARTS.glob("*.tgz")):
        with tarfile.open(archive) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        name = archive.name.rsplit("-", 1)[0]
        if change:
            members = change(name, members)
        with tarfile.open(out / archive.name, "w:gz") as tar:
            for path, data in members.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out


def relabel(chart, version):
    def change(name, members):
        if name == chart:
            key = f"{chart}/Chart.yaml"
            meta = yaml.safe_load(members[key])
            members[key] = yaml.safe_dump({**meta, "version": version}).encode()
        return members
    return change


@needs_charts
@pytest.mark.parametrize("chart,version", [("llm-d-modelservice", "0.0.0"), ("llm-d-router-gateway", "v0.1.0")])
def test_a_chart_of_another_version_is_refused_naming_both(tmp_path, chart, version):
    """Archive names say nothing: a relabelled chart under the pinned file name is read, not trusted."""
    charts = charts_copy(tmp_path, relabel(chart, version))
    pin = CATALOG.versions["charts"][chart]["version"]
    with pytest.raises(LightrailError) as err:
        render(build_plan(Request("baseline", "sim", "llmd")), charts=charts)
    assert f"chart {chart} in {charts}/{chart}-{pin}.tgz is version {version}, but {pin} is pinned" in str(err.value)


@needs_charts
def test_a_source_directory_without_built_dependencies_says_how_to_build_them(tmp_path):
    import tarfile

    charts = charts_copy(tmp_path)
    pin = CATALOG.versions["charts"]["llm-d-router-gateway"]["version"]
    archive = charts / f"llm-d-router-gateway-{pin}.tgz"
    with tarfile.open(archive) as tar:
        tar.extractall(charts, filter="data")
    archive.unlink()
    source = charts / "llm-d-router-gateway"
    shutil.rmtree(source / "charts")   # as checked out from git: routerlib comes from file://../routerlib
    with pytest.raises(LightrailError) as err:
        render(build_plan(Request("baseline", "sim", "llmd")), charts=charts)
    assert str(err.value) == (f"chart llm-d-router-gateway in {source} lacks its dependencies router under charts/ "
                              f"(run helm dependency build in {source})")


@needs_charts
def test_offline_with_local_charts_renders_them_without_any_repository(monkeypatch):
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")   # any repository request would fail
    plan = build_plan(Request("multimodel", "sim", "llmd"))
    result = render(plan, charts=CHARTS, offline=True)
    assert result.complete and of_kind(result.objects, "InferencePool")
    assert result.notes[0].startswith(f"offline: every upstream chart came from {CHARTS}")
    state = yaml.safe_load(result.artifacts["helmfile/state.yaml"])
    assert state["repositories"] == [] and all(str(CHARTS) in c["chart"] or "helmfiles/charts" in c["chart"]
                                               for c in state["charts"].values())
