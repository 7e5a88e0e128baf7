"""The kserve stack rendered by the real kustomize, validated against the real CRDs."""
import functools
import json

import pytest

from lightrail.catalog import load_catalog
from lightrail.plan import UNIT_LABEL, Request, build_plan
from lightrail.render import render, render_validated
from lightrail.router import MODEL_HEADER
from lightrail.settings import schemas_dir
from tests.test_plan import promised_labels

CATALOG = load_catalog()
COMBOS = [(p, a) for p in CATALOG.patterns for a in CATALOG.accelerators
          if not CATALOG.patterns[p].unsupported_reason(a, "kserve")]
needs_schemas = pytest.mark.skipif(schemas_dir() is None, reason="no upstream CRDs: set LIGHTRAIL_SCHEMAS=DIR")


@functools.lru_cache(maxsize=None)
def rendered(pattern, accel, api="v1alpha2", **kw):
    plan = build_plan(Request(pattern, accel, "kserve", kserve_api=api, **dict(kw)))
    return plan, render(plan).objects


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


@needs_schemas
@pytest.mark.parametrize("api", ["v1alpha2", "v1alpha1"])
@pytest.mark.parametrize("pattern,accel", COMBOS)
def test_every_kserve_combination_renders_and_validates(pattern, accel, api, monkeypatch):
    monkeypatch.setenv("LIGHTRAIL_NO_CACHE", "1")
    plan = build_plan(Request(pattern, accel, "kserve", kserve_api=api))
    result = render_validated(plan)
    kinds = {}
    for obj in result.objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        # an EnvoyFilter applies to a Gateway only from the gateway's namespace
        assert obj["metadata"]["namespace"] == ("kserve" if obj["kind"] == "EnvoyFilter" else "lightrail")
        for key, value in promised_labels(pattern, accel, "kserve").items():   # mutant M5: not plan.labels
            assert obj["metadata"]["labels"].get(key) == value, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
    assert kinds == plan.objects, "the plan's units must predict what kustomize renders"
    for isvc in of_kind(result.objects, "LLMInferenceService"):
        assert isvc["apiVersion"] == f"serving.kserve.io/{api}"


@pytest.mark.parametrize("pattern,accel", COMBOS)
def test_llminferenceservice_carries_the_plan(pattern, accel):
    plan, objects = rendered(pattern, accel)
    services = {o["metadata"]["name"]: o for o in of_kind(objects, "LLMInferenceService")}
    assert set(services) == {s.name for s in plan.servers}
    for server in plan.servers:
        spec = services[server.name]["spec"]
        assert spec["model"]["name"] == server.model and spec["replicas"] == server.replicas
        main = spec["template"]["containers"][0]
        assert main["name"] == "main" and main["image"] == server.image
        assert main["resources"]["limits"] == dict(server.resources) == main["resources"]["requests"]
        assert spec["template"].get("nodeSelector", {}) == dict(server.node_selector)
        config = spec["router"]["scheduler"]["config"]["inline"]
        profile = config["schedulingProfiles"][0]["plugins"]
        assert {p["pluginRef"]: p.get("weight") for p in profile if "weight" in p} == dict(plan.scorers)


def test_caching_has_three_replicas_prefix_caching_and_prefix_scorer():
    _, objects = rendered("caching", "gpu")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    assert isvc["spec"]["replicas"] == 3
    assert "--enable-prefix-caching" in isvc["spec"]["template"]["containers"][0]["args"]
    plugins = [p["type"] for p in isvc["spec"]["router"]["scheduler"]["config"]["inline"]["plugins"]]
    assert "prefix-cache-scorer" in plugins and "queue-scorer" in plugins


@pytest.mark.parametrize("topology,chips", [("1x1", 1), ("2x2", 4), ("2x4", 8)])
def test_tpu_requests_chips_and_tensor_parallel_equals_chips(topology, chips):
    _, objects = rendered("baseline", "tpu", topology=topology)
    (isvc,) = of_kind(objects, "LLMInferenceService")
    spec = isvc["spec"]
    assert spec["template"]["containers"][0]["resources"]["limits"]["google.com/tpu"] == str(chips)
    assert spec.get("parallelism", {}).get("tensor", 1) == chips
    assert spec["template"]["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == topology
    assert spec["template"]["tolerations"][0]["key"] == "google.com/tpu"
    env = {e["name"]: e["value"] for e in spec["template"]["containers"][0]["env"]}
    assert "PJRT_DEVICE" not in env and env["VLLM_XLA_CACHE_PATH"]
    # KServe builds --tensor-parallel-size from spec.parallelism; the flag must not be doubled.
    assert not any(a.startswith("--tensor-parallel-size") for a in spec["template"]["containers"][0]["args"])


def test_moe_has_worker_and_data_expert_parallelism():
    plan, objects = rendered("moe", "gpu")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    mn = plan.servers[0].multinode
    assert isvc["spec"]["parallelism"] == {"tensor": mn.tensor_parallel, "data": mn.data_parallel,
                                           "dataLocal": mn.data_parallel_local, "expert": True}
    assert isvc["spec"]["worker"]["containers"][0]["image"] == plan.servers[0].image
    names = {o["metadata"]["name"] for o in of_kind(objects, "NetworkPolicy")}
    assert f"{plan.servers[0].name}-allow-peers" in names


def kserve_routes(objects):
    """The HTTPRoute KServe makes for each LLMInferenceService from its router-route preset."""
    from lightrail.testing.presets import preset, templated

    route = preset(schemas_dir(), "kserve-config-llm-router-route")["spec"]["router"]["route"]["http"]["spec"]
    return {i["metadata"]["name"]: templated(route, i) for i in of_kind(objects, "LLMInferenceService")}


def header_matches(route):
    """(path, model header value) -> backend pool, for every header-matching rule of a route."""
    out = {}
    for rule in route["rules"]:
        for match in rule["matches"]:
            for header in match.get("headers", []):
                if header["name"] == MODEL_HEADER:
                    out[(match.get("path", {}).get("value"), header["value"])] = rule["backendRefs"][0]["name"]
    return out


@needs_schemas
def test_multimodel_clients_name_the_model_kserves_route_matches_and_vllm_answers_with():
    plan, objects = rendered("multimodel", "gpu")
    routes = kserve_routes(objects)
    assert not of_kind(objects, "HTTPRoute"), "KServe's own route matches the model header; no route of ours"
    for server, client in zip(plan.servers, plan.served_models):
        assert client == f"publishers/{plan.namespace}/models/{server.model}"
        matched = header_matches(routes[server.name])
        for path in ("/v1/completions", "/v1/chat/completions"):
            assert matched[(path, client)] == f"{server.name}-inference-pool"
        isvc = next(i for i in of_kind(objects, "LLMInferenceService") if i["metadata"]["name"] == server.name)
        args = isvc["spec"]["template"]["containers"][0]["args"]
        # appended after the preset's --served-model-name: the last one wins, its first name is what vLLM answers with
        i = len(args) - 1 - args[::-1].index("--served-model-name")
        assert args[i + 1:i + 3] == [client, server.model]


def test_network_policies_default_deny_and_select_each_servers_pods():
    plan, objects = rendered("multimodel", "cpu")
    policies = {o["metadata"]["name"]: o for o in of_kind(objects, "NetworkPolicy")}
    for server in plan.servers:
        deny = policies[f"{server.name}-default-deny"]["spec"]
        assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
        for name, policy in policies.items():
            if name.startswith(server.name + "-"):
                assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == server.name
        gateway = policies[f"{server.name}-allow-gateway"]["spec"]["ingress"][0]
        assert gateway["ports"] == [{"protocol": "TCP", "port": 8000}]
        assert gateway["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == server.name
        assert f"{server.name}-allow-weights-download" in policies


def test_sim_runs_the_simulator_without_weights():
    plan, objects = rendered("baseline", "sim")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    main = isvc["spec"]["template"]["containers"][0]
    assert main["command"] == ["/app/llm-d-inference-sim"] and "llm-d-inference-sim" in main["image"]
    assert f"--model={plan.servers[0].model}" in main["args"]
    assert isvc["spec"]["storageInitializer"] == {"enabled": False}
    assert not any(p["metadata"]["name"].endswith("weights-download") for p in of_kind(objects, "NetworkPolicy"))


def test_namespace_and_model_overrides_reach_the_render():
    plan, objects = rendered("baseline", "gpu", models=("meta-llama/Llama-3.1-8B-Instruct",), namespace="team-a")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    assert isvc["metadata"]["namespace"] == "team-a"
    assert isvc["spec"]["model"] == {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct",
                                     "name": "meta-llama/Llama-3.1-8B-Instruct"}
    assert isvc["metadata"]["name"] == "baseline-llama-3-1-8b-instruct"


@pytest.mark.parametrize("pattern,accel", [("baseline", "gpu"), ("caching", "tpu"), ("baseline", "cpu"), ("moe", "gpu")])
def test_vllm_images_run_as_a_numeric_non_root_user(pattern, accel):
    # KServe's presets set runAsNonRoot; the vLLM images declare no USER, so without a numeric
    # runAsUser the kubelet refuses to start them ("image will run as root").
    _, objects = rendered(pattern, accel)
    (isvc,) = of_kind(objects, "LLMInferenceService")
    pods = [isvc["spec"]["template"]] + ([isvc["spec"]["worker"]] if "worker" in isvc["spec"] else [])
    for pod in pods:
        main = pod["containers"][0]
        assert main["securityContext"]["runAsNonRoot"] is True and main["securityContext"]["runAsUser"] > 0
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["USER"] and env["TORCHINDUCTOR_CACHE_DIR"].startswith("/tmp/")


def test_scheduler_runs_the_pinned_endpoint_picker():
    plan, objects = rendered("caching", "gpu")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    (main,) = isvc["spec"]["router"]["scheduler"]["template"]["containers"]
    assert main["name"] == "main" and main["image"] == plan.epp_image
    assert plan.epp_image in plan.images


# The one flag KServe v0.20.0's scheduler preset passes that llm-d-router v0.10.0's EPP no longer
# defines (pkg/epp/server/options.go at v0.10.0 has no model-server-metrics-scheme): the EPP exits.
GONE_IN_EPP_V0_10 = "--model-server-metrics-scheme"


@needs_schemas
@pytest.mark.parametrize("tls", [False, True])
def test_endpoint_picker_command_and_metrics_scheme_match_kserves_tls_mode(tls):
    from lightrail.testing.presets import preset, templated

    plan = build_plan(Request("caching", "gpu", "kserve", kserve_tls=tls))
    (isvc,) = of_kind(render(plan).objects, "LLMInferenceService")
    scheduler = isvc["spec"]["router"]["scheduler"]
    (main,) = scheduler["template"]["containers"]
    upstream = preset(schemas_dir(), "kserve-config-llm-scheduler")["spec"]["router"]["scheduler"]["template"]
    command = templated(next(c for c in upstream["containers"] if c["name"] == "main")["command"], isvc, tls=tls)
    assert any(a.startswith(GONE_IN_EPP_V0_10) for a in command) == tls, "the preset's TLS flags changed"
    assert main["command"] == [a for a in command if a and not a.startswith(GONE_IN_EPP_V0_10)]
    # vLLM serves /metrics over https exactly when KServe turns TLS on (the preset's --ssl-certfile)
    vllm = templated(next(c for c in preset(schemas_dir(), "kserve-config-llm-template")["spec"]["template"]
                          ["containers"] if c["name"] == "main"), isvc, tls=tls)
    (source,) = [p for p in scheduler["config"]["inline"]["plugins"] if p["type"] == "metrics-data-source"]
    assert source["parameters"]["scheme"] == ("https" if "--ssl-certfile" in " ".join(vllm["command"]) else "http")
    probe = isvc["spec"]["template"]["containers"][0]["startupProbe"]
    assert probe["httpGet"]["scheme"] == vllm["startupProbe"]["httpGet"]["scheme"]


def test_kserve_tls_setting_is_a_switch(monkeypatch):
    from lightrail.cli.common import make_request
    from lightrail.errors import LightrailError

    assert make_request("baseline", "gpu", "kserve").kserve_tls is False   # KServe's default
    monkeypatch.setenv("LIGHTRAIL_KSERVE_TLS", "1")
    assert make_request("baseline", "gpu", "kserve").kserve_tls is True
    assert make_request("baseline", "gpu", "llmd").kserve_tls is False
    monkeypatch.setenv("LIGHTRAIL_KSERVE_TLS", "yes please")
    with pytest.raises(LightrailError, match="valid: 1, 0, true, false"):
        make_request("baseline", "gpu", "kserve")


def test_hf_token_reaches_the_storage_initializer_by_reference_only():
    plan, objects = rendered("moe", "gpu", hf_token=True)
    (isvc,) = of_kind(objects, "LLMInferenceService")
    ref = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": plan.hf_secret, "key": "HF_TOKEN"}}}
    for pod in (isvc["spec"]["template"], isvc["spec"]["worker"]):
        assert ref in pod["containers"][0]["env"]
        (init,) = pod["initContainers"]   # KServe downloads hf:// weights in this init container
        assert init == {"name": "storage-initializer", "env": [ref]}
    _, without = rendered("moe", "gpu")
    assert "initContainers" not in of_kind(without, "LLMInferenceService")[0]["spec"]["template"]


@pytest.mark.parametrize("pattern", ["baseline", "multimodel"])
def test_sim_answers_to_kserves_publisher_qualified_name_too(pattern):
    plan, objects = rendered(pattern, "sim")
    services = {i["metadata"]["name"]: i for i in of_kind(objects, "LLMInferenceService")}
    for server in plan.servers:
        args = services[server.name]["spec"]["template"]["containers"][0]["args"]
        i = args.index("--served-model-name")
        names = [server.model, f"publishers/{plan.namespace}/models/{server.model}"]
        assert args[i + 1] == plan.client_model(server) and sorted(args[i + 1:i + 3]) == sorted(names)


def test_a_local_model_path_is_refused_with_the_reason():
    from lightrail.errors import LightrailError

    plan = build_plan(Request("baseline", "cpu", "kserve", models=("/models/qwen",)))
    with pytest.raises(LightrailError, match=r"KServe loads models from a URI \(hf://"):
        render(plan)


@needs_schemas
def test_multimodel_body_based_router_feeds_the_model_routes():
    plan, objects = rendered("multimodel", "gpu")
    (deploy,) = of_kind(objects, "Deployment")
    (svc,) = of_kind(objects, "Service")
    (envoy,) = of_kind(objects, "EnvoyFilter")
    (rule,) = of_kind(objects, "DestinationRule")
    (binding,) = of_kind(objects, "RoleBinding")
    (role,) = of_kind(objects, "Role")
    pod = deploy["spec"]["template"]
    (bbr,) = pod["spec"]["containers"]
    assert bbr["image"] == plan.versions["images"]["bbr"]
    extractor = next(a for a in bbr["args"] if a.startswith("body-field-to-header:"))
    assert json.loads(extractor.split(":", 2)[2]) == {"fieldName": "model", "headerName": MODEL_HEADER}
    # the Service reaches the router's pods and port; RBAC binds its service account
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = svc["spec"]["ports"][0]["port"]
    assert port in [p["containerPort"] for p in bbr["ports"]]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["spec"]["serviceAccountName"],
                                    "namespace": plan.namespace}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # the gateway the routes hang on calls the router first, over the TLS the DestinationRule sets
    host = f"{svc['metadata']['name']}.{plan.namespace}.svc.cluster.local"
    patch = envoy["spec"]["configPatches"][0]["patch"]["value"]
    assert patch["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == f"outbound|{port}||{host}"
    assert rule["spec"]["host"] == host
    for route in kserve_routes(objects).values():
        (parent,) = route["parentRefs"]
        assert envoy["metadata"]["namespace"] == parent["namespace"]
        assert envoy["spec"]["targetRefs"] == [{k: parent[k] for k in ("group", "kind", "name")}]
    # every object of the router carries its unit's name (a migration keeps them with the Gateway), no other
    router = [deploy, svc, envoy, rule, binding, role, *of_kind(objects, "ServiceAccount"), *of_kind(objects, "NetworkPolicy")]
    router = [o for o in router if o["metadata"]["name"].endswith(("bbr", "bbr-configmap-reader"))]
    assert {o["kind"] for o in router} == {"Deployment", "Service", "EnvoyFilter", "DestinationRule", "RoleBinding",
                                           "Role", "ServiceAccount", "NetworkPolicy"}
    assert [o for o in objects if o["metadata"]["labels"].get(UNIT_LABEL)] == [o for o in objects if o in router]
    assert {o["metadata"]["labels"][UNIT_LABEL] for o in router} == {"multimodel-bbr"}
    # on its pods too (their ReplicaSet copies the template's labels: a migration's teardown spares them), not
    # in the selector, which a Deployment cannot change
    assert deploy["spec"]["template"]["metadata"]["labels"][UNIT_LABEL] == "multimodel-bbr"
    assert UNIT_LABEL not in deploy["spec"]["selector"]["matchLabels"] and UNIT_LABEL not in svc["spec"]["selector"]
    # one filter per deployment on the shared gateway
    _, elsewhere = rendered("multimodel", "gpu", namespace="team-b")
    assert of_kind(elsewhere, "EnvoyFilter")[0]["metadata"]["name"] != envoy["metadata"]["name"]


@pytest.mark.parametrize("pattern", ["baseline", "caching", "moe"])
def test_only_multimodel_routes_by_body(pattern):
    _, objects = rendered(pattern, "gpu")
    assert {o["kind"] for o in objects} == {"LLMInferenceService", "NetworkPolicy"}


def test_picker_names_kserves_hashed_pool_for_long_model_names():
    # KServe names the pool kmeta.ChildName(<name>, "-inference-pool"): hashed past 63 characters
    plan, objects = rendered("multimodel", "cpu", models=("Qwen/Qwen2.5-3B-Instruct",
                                                           "example-org/an-extremely-long-model-name-for-routing-tests-v2"))
    pools = {}
    for isvc in of_kind(objects, "LLMInferenceService"):
        command = isvc["spec"]["router"]["scheduler"]["template"]["containers"][0]["command"]
        pools[isvc["spec"]["model"]["name"]] = command[command.index("--pool-name") + 1]
    assert pools == {"Qwen/Qwen2.5-3B-Instruct": "multimodel-qwen2-5-3b-instruct-inference-pool",
                     "example-org/an-extremely-long-model-name-for-routing-tests-v2":
                         "multimodel-an-ex5c563ae098d0f3a8f6355c0183b00197-inference-pool"}


@pytest.mark.parametrize("pattern,accel", [("multimodel", "sim"), ("moe", "gpu")])
def test_pods_carry_the_plan_labels_and_selectors_stay_untouched(pattern, accel):
    plan, objects = rendered(pattern, accel)
    labels = dict(plan.labels)
    for isvc in of_kind(objects, "LLMInferenceService"):
        assert isvc["spec"]["labels"] == labels == isvc["spec"]["router"]["scheduler"]["labels"]
    for deploy in of_kind(objects, "Deployment"):
        assert labels.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
        assert not labels.keys() & deploy["spec"]["selector"]["matchLabels"].keys()
    for obj in objects:
        assert not labels.keys() & obj.get("spec", {}).get("podSelector", {}).get("matchLabels", {}).keys()
