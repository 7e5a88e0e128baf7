"""The llmd stack: values composed from the plan, the real helmfile, and — when LIGHTRAIL_CHARTS
points at the upstream charts — the real charts rendered and validated object by object."""
import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
import yaml

from lightrail import tools
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.llmd.values import release_values, server_labels, weights_volume
from lightrail.plan import VLLM_PORT, Request, build_plan
from lightrail.render import render, render_validated
from lightrail.router import MODEL_HEADER
from lightrail.settings import charts_dir, schemas_dir
from lightrail.validate import validate_values
from tests.test_plan import promised_labels

CATALOG = load_catalog()
PROVIDERS = list(CATALOG.gateways)
COMBOS = [(p, a) for p in CATALOG.patterns for a in CATALOG.accelerators
          if not CATALOG.patterns[p].unsupported_reason(a, "llmd")]
CHARTS = charts_dir()
needs_charts = pytest.mark.skipif(
    CHARTS is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR with DIR/llm-d-infra, "
    "DIR/llm-d-router-gateway, DIR/llm-d-modelservice, DIR/body-based-routing (directories or .tgz)")
needs_schemas = pytest.mark.skipif(schemas_dir() is None, reason="no upstream schemas: set LIGHTRAIL_SCHEMAS=DIR")


def plan_of(pattern, accel, provider="istio", **kw):
    return build_plan(Request(pattern, accel, "llmd", provider=provider, **kw))


def own_units(plan):
    """Objects of the releases of Lightrail's own charts (rendered even offline)."""
    pins = CATALOG.versions["charts"]
    return {k: n for u in plan.units if u.source not in pins for k, n in u.objects.items()}


@needs_schemas
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("pattern,accel", COMBOS)
def test_offline_check_of_state_and_values(pattern, accel, provider):
    plan = plan_of(pattern, accel, provider)
    result = render(plan, offline=True)
    assert not result.complete and "LIGHTRAIL_CHARTS" in result.notes[0]
    assert kinds_of(result.objects) == own_units(plan)
    for obj in result.objects:
        assert obj["metadata"]["labels"].items() >= {k: v for k, v in promised_labels(pattern, accel, "llmd").items()
                                                     if k.startswith("lightrail.dev/")}.items()
    state = yaml.safe_load(result.artifacts["helmfile/state.yaml"])
    assert [s["name"] for s in state["servers"]] == [s.name for s in plan.servers]
    assert state["labels"] == {k: v for k, v in plan.labels.items() if k.startswith("lightrail.dev/")}
    assert state["namespace"] == plan.namespace
    for release, (chart, values) in release_values(plan).items():
        assert yaml.safe_load(result.artifacts[f"helmfile/values/{release}.yaml"]) == values
        assert validate_values(chart, values) == []
    # The user re-runs what we ran, from the pinned repositories.
    assert state["charts"]["modelservice"] == {"chart": "llm-d-modelservice/llm-d-modelservice",
                                               "version": CATALOG.versions["charts"]["llm-d-modelservice"]["version"]}


def test_values_carry_the_pattern():
    plan = plan_of("caching", "tpu")
    values = release_values(plan)
    (server,) = plan.servers
    ms = values[f"{server.name}-ms"][1]
    decode = ms["decode"]
    assert decode["replicas"] == 3 and "--enable-prefix-caching" in decode["containers"][0]["args"]
    assert decode["parallelism"] == {"tensor": 4}
    assert decode["containers"][0]["resources"]["limits"]["google.com/tpu"] == "4"
    assert decode["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "2x2"
    assert ms["accelerator"] == {"type": "google"} and ms["modelArtifacts"]["labels"] == server_labels(server)
    router = values[server.name][1]
    assert router["router"]["modelServers"]["matchLabels"] == server_labels(server)
    config = yaml.safe_load(router["router"]["epp"]["pluginsCustomConfig"]["lightrail.yaml"])
    weights = {p["pluginRef"]: p["weight"] for p in config["schedulingProfiles"][0]["plugins"] if "weight" in p}
    assert weights == {"prefix-cache-scorer": 3, "queue-scorer": 2, "kv-cache-utilization-scorer": 2}


def test_multimodel_has_bbr_and_a_route_per_model_name():
    plan = plan_of("multimodel", "gpu")
    values = release_values(plan)
    assert values["multimodel-bbr"][0] == "body-based-routing"
    for s in plan.servers:
        assert values[s.name][1]["httpRoute"]["headerMatches"] == {MODEL_HEADER: s.model}


def test_agentgateway_sets_the_model_header_itself():
    plan = plan_of("multimodel", "gpu", "agentgateway")
    chart, values = release_values(plan)["multimodel-bbr"]
    assert chart == "agentgateway-body-routing"
    assert values == {"gateway": plan.gateway.name, "header": MODEL_HEADER}
    assert plan.units[1].objects == {"AgentgatewayPolicy": 1}


@pytest.mark.parametrize("accel,kw,size", [
    ("gpu", {}, "24Gi"),                        # one L4
    ("gpu", {"gpu_type": "h100"}, "80Gi"),
    ("tpu", {"topology": "2x4"}, "256Gi"),      # 8 v6e chips x 32 GiB HBM
    ("cpu", {}, "16Gi"),                        # the pod's memory
])
def test_weights_volume_holds_what_the_accelerators_can(accel, kw, size):
    plan = plan_of("baseline", accel, **kw)
    artifacts = release_values(plan)[f"{plan.servers[0].name}-ms"][1]["modelArtifacts"]
    assert artifacts["size"] == size == weights_volume(plan, plan.servers[0])


def test_weights_volume_of_a_multinode_group_and_none_for_the_simulator():
    moe = plan_of("moe", "gpu")
    assert weights_volume(moe, moe.servers[0]) == "640Gi"      # 2 nodes x 4 H100
    sim = plan_of("baseline", "sim")
    assert "size" not in release_values(sim)[f"{sim.servers[0].name}-ms"][1]["modelArtifacts"]


def test_hf_token_secret_only_when_a_token_is_provided():
    ms = lambda plan: release_values(plan)[f"{plan.servers[0].name}-ms"][1]["modelArtifacts"]  # noqa: E731
    assert "authSecretName" not in ms(plan_of("baseline", "gpu"))
    assert ms(plan_of("baseline", "gpu", hf_token=True))["authSecretName"] == "lightrail-hf-token"
    assert "authSecretName" not in ms(plan_of("baseline", "sim", hf_token=True))


def probes_of(plan, server):
    """The probes of a model server's container, as composed into the modelservice values."""
    (container,) = release_values(plan)[f"{server.name}-ms"][1]["decode"]["containers"]
    return {k: v for k, v in container["extraConfig"].items() if k.endswith("Probe")}


@pytest.mark.parametrize("pattern,accel", COMBOS)
def test_model_servers_are_ready_once_they_list_their_models(pattern, accel):
    """Mutant M11 (readiness probe path changed), without charts: Kubernetes sends traffic to a pod
    once it answers the path smoke's warm-up waits for, the OpenAI model list on vLLM's port."""
    plan = plan_of(pattern, accel)
    for server in plan.servers:
        probes = probes_of(plan, server)
        assert probes["readinessProbe"]["httpGet"] == {"path": "/v1/models", "port": VLLM_PORT}
        assert {p["httpGet"]["port"] for p in probes.values()} == {VLLM_PORT}


@pytest.mark.vllm
def test_a_real_vllm_answers_every_probe_and_readiness_lists_the_model(vllm_server):
    """Mutant M11 against the real server: every probe path is one vLLM serves, and the readiness
    probe's answer is the model list naming the served model (not merely a live engine)."""
    plan = plan_of("baseline", "cpu")
    (server,) = plan.servers
    for name, probe in probes_of(plan, server).items():
        resp = httpx.get(vllm_server.url + probe["httpGet"]["path"], timeout=10)
        assert resp.status_code == 200, (name, probe)
    ready = httpx.get(vllm_server.url + probes_of(plan, server)["readinessProbe"]["httpGet"]["path"], timeout=10)
    assert [m["id"] for m in ready.json()["data"]] == list(vllm_server.served_models)


def test_missing_chart_in_charts_dir_is_named(tmp_path):
    (tmp_path / "llm-d-infra").mkdir()
    with pytest.raises(LightrailError) as err:
        render(plan_of("baseline", "sim"), charts=tmp_path)
    assert f"chart llm-d-modelservice not found in {tmp_path}" in str(err.value)
    assert "llm-d-modelservice.tgz" in str(err.value)


# --- with the real upstream charts ------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def rendered(pattern, accel, provider="istio", **kw):
    return render(plan_of(pattern, accel, provider, **dict(kw)), charts=CHARTS).objects


def kinds_of(objects):
    out = {}
    for o in objects:
        out[o["kind"]] = out.get(o["kind"], 0) + 1
    return dict(sorted(out.items()))


def find(objects, kind, name=None):
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def container(workload):
    """The first container of a Deployment (or of a pod template)."""
    template = workload["spec"]["template"] if "spec" in workload and "template" in workload["spec"] else workload
    return template["spec"]["containers"][0]


def flag(argv, name):
    """The value of `--name=value` or `--name value` in argv, or None."""
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name:
            return argv[i + 1]
    return None


def pod_templates(objects):
    for o in objects:
        if o["kind"] == "Deployment":
            yield o["spec"]["template"]
        elif o["kind"] == "LeaderWorkerSet":
            yield o["spec"]["leaderWorkerTemplate"]["workerTemplate"]


@needs_charts
@needs_schemas
@pytest.mark.parametrize("pattern,accel", COMBOS)
def test_real_charts_render_valid_labelled_objects(pattern, accel, monkeypatch):
    monkeypatch.setenv("LIGHTRAIL_NO_CACHE", "1")
    plan = plan_of(pattern, accel)
    result = render_validated(plan, charts=CHARTS)
    assert result.complete
    assert_labelled_and_namespaced(plan, result.objects)
    assert kinds_of(result.objects) == plan.objects, "the plan's units must predict what the charts render"
    for template in pod_templates(result.objects):
        volumes = {v["name"] for v in template["spec"].get("volumes", [])}
        for c in template["spec"]["containers"]:
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, f"{c['name']} mounts a missing volume"
        if "llm-d.ai/model" in template["metadata"]["labels"]:   # a model server: ready only once it serves
            main = template["spec"]["containers"][0]
            assert main["readinessProbe"]["httpGet"] == {"path": "/v1/models", "port": VLLM_PORT}
            assert main["startupProbe"]["httpGet"]["port"] == VLLM_PORT


def assert_labelled_and_namespaced(plan, objects):
    promised = promised_labels(plan.pattern.name, plan.request.accel, "llmd")
    for obj in objects:
        meta, what = obj["metadata"], f"{obj['kind']}/{obj['metadata']['name']}"
        for key, value in promised.items():
            if key == "app.kubernetes.io/managed-by":   # Helm's, for its ownership check
                assert meta["labels"].get(key, "Helm") == "Helm", f"{what}: {key} is not Helm's"
            else:
                assert meta["labels"].get(key) == value, f"{what} lacks {key}"
        assert meta.get("namespace") == plan.namespace, f"{what} is not in namespace {plan.namespace}"


@needs_charts
@pytest.mark.parametrize("provider", ["gke", "agentgateway"])
def test_other_providers_render_their_objects_and_units_predict_them(provider):
    plan = plan_of("multimodel", "sim", provider)
    objects = rendered("multimodel", "sim", provider)
    assert kinds_of(objects) == plan.objects
    assert_labelled_and_namespaced(plan, objects)


@needs_charts
def test_agentgateway_real_render_routes_by_a_header_it_sets_from_the_body():
    plan = plan_of("multimodel", "sim", "agentgateway")
    objects = rendered("multimodel", "sim", "agentgateway")
    (policy,) = find(objects, "AgentgatewayPolicy")
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                             "name": plan.gateway.name}]
    traffic = policy["spec"]["traffic"]
    assert traffic["phase"] == "PreRouting"
    assert traffic["transformation"]["request"]["set"] == [{"name": MODEL_HEADER,
                                                            "value": "string(json(request.body).model)"}]
    assert not [d for d in find(objects, "Deployment") if "bbr" in d["metadata"]["name"]]
    matched = {r["spec"]["rules"][0]["matches"][0]["headers"][0]["value"] for r in find(objects, "HTTPRoute")}
    assert matched == set(plan.served_models)


def chart_source(name: str):
    """Where LIGHTRAIL_CHARTS holds a chart: DIR/<name>, DIR/<name>.tgz or DIR/<name>-<version>.tgz."""
    version = CATALOG.versions["charts"][name]["version"]
    return next(p for p in (CHARTS / name, CHARTS / f"{name}.tgz", CHARTS / f"{name}-{version}.tgz") if p.exists())


@needs_charts
def test_packaged_charts_render_the_same_as_directories(tmp_path):
    """LIGHTRAIL_CHARTS may hold directories, <name>.tgz or, as `helm pull` writes them,
    <name>-<version>.tgz: whichever it holds, the same charts as directories and as archives packed
    by the real `helm package` render the same objects."""
    pins = CATALOG.versions["charts"]
    dirs, packed = tmp_path / "dirs", tmp_path / "packed"
    for i, name in enumerate(pins):
        source = chart_source(name)
        if source.is_dir():
            shutil.copytree(source, dirs / name)
        else:
            with tarfile.open(source) as archive:
                archive.extractall(dirs, filter="data")
        assert (dirs / name / "Chart.yaml").is_file()
        out = tools.run("helm", "package", str(dirs / name), "--destination", str(tmp_path / "pkg")).stdout
        built = Path(out.strip().rsplit(": ", 1)[1])
        packed.mkdir(exist_ok=True)
        built.rename(packed / (f"{name}.tgz" if i % 2 else f"{name}-{pins[name]['version']}.tgz"))
    plan = plan_of("multimodel", "sim")
    from_dirs = render(plan, charts=dirs).objects
    assert from_dirs and render(plan, charts=packed).objects == from_dirs == rendered("multimodel", "sim")


@needs_charts
def test_caching_real_render():
    plan = plan_of("caching", "gpu")
    (server,) = plan.servers
    objects = rendered("caching", "gpu")
    (decode,) = find(objects, "Deployment", f"{server.name}-decode")
    assert decode["spec"]["replicas"] == 3
    args = container(decode)["args"]
    assert "--enable-prefix-caching" in args and "--served-model-name" in args
    assert decode["spec"]["template"]["metadata"]["labels"]["llm-d.ai/model"] == server.name
    (pool,) = find(objects, "InferencePool", server.name)
    assert pool["spec"]["selector"]["matchLabels"] == server_labels(server)
    (config,) = find(objects, "ConfigMap", f"{server.name}-epp")
    epp = yaml.safe_load(config["data"]["lightrail.yaml"])
    assert {p["type"] for p in epp["plugins"]} >= {"prefix-cache-scorer", "queue-scorer", "kv-cache-utilization-scorer"}
    weights = {p["pluginRef"]: p["weight"] for p in epp["schedulingProfiles"][0]["plugins"] if "weight" in p}
    assert weights == dict(plan.scorers) and weights["prefix-cache-scorer"] > 0
    volumes = {v["name"]: v for v in decode["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-storage"]["emptyDir"]["sizeLimit"] == "24Gi"   # the L4's memory, not the chart's 5Mi
    (epp_deploy,) = find(objects, "Deployment", f"{server.name}-epp")
    assert "/config/lightrail.yaml" in json.dumps(container(epp_deploy))
    assert container(epp_deploy)["image"] == plan.epp_image


@needs_charts
@pytest.mark.parametrize("topology,chips", [("1x1", 1), ("2x2", 4), ("2x4", 8)])
def test_tpu_real_render_requests_chips_and_tp(topology, chips):
    (server,) = plan_of("baseline", "tpu", topology=topology).servers
    (decode,) = find(rendered("baseline", "tpu", topology=topology), "Deployment", f"{server.name}-decode")
    main = container(decode)
    assert main["resources"]["limits"]["google.com/tpu"] == str(chips)
    assert flag(main["args"], "--tensor-parallel-size") == (str(chips) if chips > 1 else None)
    shm = [m for m in main.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
    assert bool(shm) == (chips > 1), "several ranks in a pod need more /dev/shm than a container's 64Mi"
    pod = decode["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == dict(server.node_selector)
    assert pod["tolerations"][0]["key"] == "google.com/tpu"
    assert "PJRT_DEVICE" not in {e["name"] for e in main["env"]}   # read by nothing in tpu-inference v0.26.0


@needs_charts
def test_multimodel_real_render_routes_by_model_header():
    plan = plan_of("multimodel", "gpu")
    objects = rendered("multimodel", "gpu")
    routes = {}
    for route in find(objects, "HTTPRoute"):
        rule = route["spec"]["rules"][0]
        headers = {h["name"]: h["value"] for h in rule["matches"][0]["headers"]}
        routes[headers[MODEL_HEADER]] = rule["backendRefs"][0]["name"]
        assert route["spec"]["parentRefs"][0]["name"] == plan.gateway.name
    assert routes == {s.model: s.pool for s in plan.servers}
    assert len(find(objects, "InferencePool")) == 2 and find(objects, "EnvoyFilter")


# Parses argv lists (JSON on stdin) with the installed vLLM's own `vllm serve` parser and its
# post-parse validation, and prints the parsed options: what vLLM itself understands of them.
VLLM_SERVE_PARSER = """
import json, sys
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser(prog="vllm")
ServeSubcommand().subparser_init(parser.add_subparsers(dest="subcommand"))
parsed = []
for argv in json.load(sys.stdin):
    args = parser.parse_args(argv)
    validate_parsed_serve_args(args)
    parsed.append(vars(args))
json.dump(parsed, sys.stdout, default=str)
"""


@needs_charts
@pytest.mark.vllm
def test_moe_real_render_gives_every_pod_of_the_leaderworkerset_its_ranks(tmp_path):
    """Each pod's command line, as the pod's shell expands it (LWS sets the leader address and the
    worker index), read by the installed vLLM's own `vllm serve` parser: a flag vLLM does not know,
    or a value it rejects, fails here (no server is started: the model is not on this machine).
    moe runs on gpu only (tpu is refused: see docs/patterns/moe.md)."""
    (server,) = plan_of("moe", "gpu").servers
    mn = server.multinode
    (lws,) = find(rendered("moe", "gpu"), "LeaderWorkerSet")
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == mn.size
    main = container(template["workerTemplate"])
    # The real /bin/sh runs the rendered command; what it would exec is taken down, then parsed.
    (tmp_path / "vllm").write_text('#!/bin/sh\nprintf "%s\\0" "$@"\n')
    (tmp_path / "vllm").chmod(0o755)
    argvs = []
    for index in range(mn.size):
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LWS_LEADER_ADDRESS": "leader.example", "LWS_WORKER_INDEX": str(index)}
        out = subprocess.run([*main["command"], *main["args"]], env=env, capture_output=True, text=True, check=True)
        argvs.append(out.stdout.split("\0")[:-1])
    parsed = json.loads(subprocess.run([sys.executable, "-c", VLLM_SERVE_PARSER], input=json.dumps(argvs),
                                       capture_output=True, text=True, check=True, timeout=300,
                                       env={**os.environ, "VLLM_NO_USAGE_STATS": "1"}).stdout)
    for index, args in enumerate(parsed):
        assert args["subcommand"] == "serve" and args["model_tag"] == server.model
        assert args["port"] == VLLM_PORT and args["served_model_name"] == [server.model]
        assert args["enable_expert_parallel"] is True and args["data_parallel_hybrid_lb"] is True
        assert args["data_parallel_size"] == mn.data_parallel
        assert args["data_parallel_size_local"] == mn.data_parallel_local
        assert args["data_parallel_start_rank"] == index * mn.data_parallel_local
        assert args["data_parallel_address"] == "leader.example"
        assert args["tensor_parallel_size"] == mn.tensor_parallel


@needs_charts
def test_model_from_a_path_in_the_container_is_served_from_that_path():
    plan = plan_of("baseline", "gpu", models=("/models/my-llama",))
    (server,) = plan.servers
    (decode,) = find(render(plan, charts=CHARTS).objects, "Deployment", f"{server.name}-decode")
    main = container(decode)
    assert main["command"] == ["vllm", "serve"] and main["args"][0] == "/models/my-llama"
    assert flag(main["args"], "--served-model-name") == "/models/my-llama"
    assert "model-storage" not in json.dumps(decode)


@needs_charts
def test_sim_real_render_uses_the_simulator_without_weights():
    (server,) = plan_of("baseline", "sim").servers
    (decode,) = find(rendered("baseline", "sim"), "Deployment", f"{server.name}-decode")
    main = container(decode)
    assert "llm-d-inference-sim" in main["image"] and "command" not in main
    assert main["args"][:2] == ["--model", server.model]
    assert not any(k not in ("cpu", "memory") for k in main["resources"].get("limits", {}))


@needs_charts
@needs_schemas
def test_gke_kinds_without_a_schema_fail_validation_by_name(monkeypatch):
    monkeypatch.setenv("LIGHTRAIL_NO_CACHE", "1")
    with pytest.raises(LightrailError) as err:
        render_validated(plan_of("baseline", "sim", "gke"), charts=CHARTS)
    assert "no schema for networking.gke.io/v1 GCPBackendPolicy" in str(err.value)
