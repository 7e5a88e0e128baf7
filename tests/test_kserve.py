"""The kserve stack rendered by the real kustomize, validated against the real CRDs."""
import functools

import pytest

from lightrail.catalog import load_catalog
from lightrail.plan import Request, build_plan
from lightrail.render import render, render_validated
from lightrail.router import MODEL_HEADER
from lightrail.settings import schemas_dir

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
        assert obj["metadata"]["namespace"] == "lightrail"
        for key, value in plan.labels.items():
            assert obj["metadata"]["labels"][key] == value, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
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
    assert env["PJRT_DEVICE"] == "TPU"
    # KServe builds --tensor-parallel-size from spec.parallelism; the flag must not be doubled.
    assert not any(a.startswith("--tensor-parallel-size") for a in spec["template"]["containers"][0]["args"])


@pytest.mark.parametrize("accel", ["gpu", "tpu"])
def test_moe_has_worker_and_data_expert_parallelism(accel):
    plan, objects = rendered("moe", accel)
    (isvc,) = of_kind(objects, "LLMInferenceService")
    mn = plan.servers[0].multinode
    assert isvc["spec"]["parallelism"] == {"tensor": mn.tensor_parallel, "data": mn.data_parallel,
                                           "dataLocal": mn.data_parallel_local, "expert": True}
    assert isvc["spec"]["worker"]["containers"][0]["image"] == plan.servers[0].image
    names = {o["metadata"]["name"] for o in of_kind(objects, "NetworkPolicy")}
    assert f"{plan.servers[0].name}-allow-peers" in names


def test_multimodel_routes_each_model_name_to_its_own_pool():
    plan, objects = rendered("multimodel", "gpu")
    routes = of_kind(objects, "HTTPRoute")
    seen = {}
    for route in routes:
        rule = route["spec"]["rules"][0]
        header = rule["matches"][0]["headers"][0]
        assert header["name"] == MODEL_HEADER and header["type"] == "Exact"
        seen[header["value"]] = rule["backendRefs"][0]["name"]
    assert seen == {s.model: f"{s.name}-inference-pool" for s in plan.servers}


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
    assert isvc["spec"]["router"]["scheduler"]["template"]["containers"] == [{"name": "main", "image": plan.epp_image}]
    assert plan.epp_image in plan.images


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


def test_sim_answers_to_kserves_publisher_qualified_name_too():
    plan, objects = rendered("baseline", "sim")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    args = isvc["spec"]["template"]["containers"][0]["args"]
    model = plan.servers[0].model
    i = args.index("--served-model-name")
    assert args[i + 1:i + 3] == [model, f"publishers/{plan.namespace}/models/{model}"]


def test_a_local_model_path_is_refused_with_the_reason():
    from lightrail.errors import LightrailError

    plan = build_plan(Request("baseline", "cpu", "kserve", models=("/models/qwen",)))
    with pytest.raises(LightrailError, match=r"KServe loads models from a URI \(hf://"):
        render(plan)
