"""The catalog and the plan: every combination, every invariant, every refusal."""
import json
import subprocess
import sys
import tomllib

import pytest

from lightrail.catalog import STACKS, load_catalog
from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan, supported_combinations
from lightrail.settings import ROOT

CATALOG = load_catalog()
ALL = [(p, a, s) for p in CATALOG.patterns for a in CATALOG.accelerators for s in STACKS]
SUPPORTED = [c for c in ALL if not CATALOG.patterns[c[0]].unsupported_reason(c[1], c[2])]
UNSUPPORTED = [c for c in ALL if c not in SUPPORTED]


def promised_labels(pattern: str, accel: str, stack: str) -> dict[str, str]:
    """The labels DEVELOPERS.md promises on every object, built here rather than read from the plan
    (the version is the distribution's, from pyproject.toml)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return {"app.kubernetes.io/managed-by": "lightrail", "lightrail.dev/pattern": pattern,
            "lightrail.dev/stack": stack, "lightrail.dev/accel": accel, "lightrail.dev/version": version}


def test_catalog_has_the_four_patterns_and_accelerators():
    assert list(CATALOG.patterns) == ["baseline", "multimodel", "caching", "moe"]
    assert set(CATALOG.accelerators) == {"gpu", "tpu", "cpu", "sim"}
    assert len(SUPPORTED) >= 26 and UNSUPPORTED


@pytest.mark.parametrize("pattern,accel,stack", SUPPORTED)
def test_every_supported_combination_plans(pattern, accel, stack):
    """Also kills mutant M5 (drop the `lightrail.dev/version` label): the labels are compared with
    the promised set, not with themselves."""
    plan = build_plan(Request(pattern, accel, stack))
    assert plan.servers and plan.units
    assert plan.labels == promised_labels(pattern, accel, stack)
    json.dumps(plan.to_dict())  # printable as JSON
    for s in plan.servers:
        assert len(s.name) <= 53 and s.name.startswith(pattern)


@pytest.mark.parametrize("pattern,accel,stack", UNSUPPORTED)
def test_every_unsupported_combination_is_refused_with_its_reason(pattern, accel, stack):
    reason = CATALOG.patterns[pattern].unsupported_reason(accel, stack)
    with pytest.raises(LightrailError) as err:
        build_plan(Request(pattern, accel, stack))
    assert reason in str(err.value) and "supported:" in str(err.value)


@pytest.mark.parametrize("topology,chips", [("1x1", 1), ("2x2", 4), ("2x4", 8)])
@pytest.mark.parametrize("pattern", ["baseline", "caching", "multimodel"])
def test_tpu_requests_equal_topology_chips_and_tp_equals_chips(pattern, topology, chips):
    plan = build_plan(Request(pattern, "tpu", topology=topology))
    for s in plan.servers:
        assert s.resources["google.com/tpu"] == str(chips)
        assert s.tensor_parallel == chips
        assert (f"--tensor-parallel-size={chips}" in s.args) == (chips > 1)
        assert s.node_selector == {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
                                   "cloud.google.com/gke-tpu-topology": topology}
        assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in s.tolerations
        assert "PJRT_DEVICE" not in s.env   # read by nothing in tpu-inference v0.26.0
    assert plan.accelerator_totals == {"google.com/tpu": chips * plan.replicas_total}


def test_caching_on_tpu_needs_twelve_chips():
    plan = build_plan(Request("caching", "tpu"))
    assert plan.accelerator_totals == {"google.com/tpu": 12}
    assert plan.cost.per_hour == pytest.approx(12 * 2.70 + 3 * (8 * 0.0316 + 64 * 0.0042))


def test_caching_has_three_replicas_prefix_caching_and_scorer():
    plan = build_plan(Request("caching", "gpu"))
    (server,) = plan.servers
    assert server.replicas == 3 and "--enable-prefix-caching" in server.args
    assert plan.scorers["prefix-cache-scorer"] > 0
    assert {"queue-scorer", "kv-cache-utilization-scorer"} <= set(plan.scorers)


def test_multimodel_has_one_server_per_model_with_distinct_names():
    plan = build_plan(Request("multimodel", "gpu"))
    assert plan.served_models == ("Qwen/Qwen2.5-3B-Instruct", "microsoft/Phi-3-mini-4k-instruct")
    assert len({s.pool for s in plan.servers}) == 2 and plan.body_based_routing
    three = build_plan(Request("multimodel", "gpu", models=("a/m", "b/m", "c/x")))
    assert [s.name for s in three.servers] == ["multimodel-m", "multimodel-m-2", "multimodel-x"]


@pytest.mark.parametrize("accel,dp,local,tp,size,resource", [
    ("gpu", 8, 4, 1, 2, ("nvidia.com/gpu", "4")),
])
def test_moe_is_multinode_with_data_and_expert_parallel(accel, dp, local, tp, size, resource):
    (s,) = build_plan(Request("moe", accel)).servers
    mn = s.multinode
    assert (mn.data_parallel, mn.data_parallel_local, mn.tensor_parallel, mn.size) == (dp, local, tp, size)
    assert mn.expert_parallel and "--enable-expert-parallel" in s.args
    assert f"--data-parallel-size={dp}" in s.args and f"--data-parallel-size-local={local}" in s.args
    assert s.resources[resource[0]] == resource[1] and s.pods == size


@pytest.mark.parametrize("gpu_type,label", [("t4", "nvidia-tesla-t4"), ("l4", "nvidia-l4"),
                                            ("a100", "nvidia-tesla-a100"), ("h100", "nvidia-h100-80gb")])
def test_gpu_types_set_node_selector_and_gpu_requests(gpu_type, label):
    (s,) = build_plan(Request("baseline", "gpu", gpu_type=gpu_type)).servers
    assert s.node_selector == {"cloud.google.com/gke-accelerator": label}
    assert s.resources["nvidia.com/gpu"] == "1"
    assert s.image.startswith("docker.io/vllm/vllm-openai:")


def test_cpu_swaps_in_small_models_and_sim_has_no_weights():
    cpu = build_plan(Request("multimodel", "cpu"))
    assert cpu.served_models == ("Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct")
    assert not cpu.accelerator_totals
    sim = build_plan(Request("baseline", "sim"))
    (s,) = sim.servers
    assert s.source == "" and "llm-d-inference-sim" in s.image and "--enable-prefix-caching" not in s.args


def test_overrides():
    plan = build_plan(Request("baseline", "gpu", models=("meta-llama/Llama-3.1-8B-Instruct",), replicas=2,
                              namespace="team-a", extra_args=("--max-model-len=8192",)))
    (s,) = plan.servers
    assert s.model == "meta-llama/Llama-3.1-8B-Instruct" and s.replicas == 2 and plan.namespace == "team-a"
    assert "--max-model-len=8192" in s.args and "--max-model-len=4096" not in s.args
    assert build_plan(Request("baseline", "cpu", models=("/models/tiny",))).servers[0].source == "/models/tiny"


@pytest.mark.parametrize("request_,message", [
    (Request("nope", "gpu"), "unknown pattern 'nope'; valid: baseline, multimodel, caching, moe"),
    (Request("baseline", "fpga"), "unknown accel 'fpga'; valid: gpu, tpu, cpu, sim"),
    (Request("baseline", "gpu", stack="ray"), "unknown stack 'ray'; valid: llmd, kserve"),
    (Request("baseline", "gpu", gpu_type="v100"), "unknown GPU type 'v100'; valid: t4, l4, a100, a100-80gb, h100"),
    (Request("baseline", "tpu", topology="3x3"), "unknown TPU v6e topology '3x3'; valid: 1x1, 2x2, 2x4, 4x4, 4x8"),
    (Request("baseline", "tpu", topology="4x4"), "spans 4 hosts; Lightrail runs one vLLM per TPU host"),
    (Request("caching", "tpu", topology="4x8"), "(use one of 1x1, 2x2, 2x4)"),
    (Request("moe", "tpu"), "cannot run data-parallel ranks across hosts"),
    (Request("moe", "tpu", stack="kserve"), "cannot run data-parallel ranks across hosts"),
    (Request("baseline", "gpu", topology="2x2"), "--topology applies to --accel=tpu only"),
    (Request("baseline", "tpu", gpu_type="l4"), "--gpu-type applies to --accel=gpu only"),
    (Request("baseline", "gpu", replicas=0), "replicas must be a whole number from 1 to 2147483647"),
    (Request("baseline", "gpu", replicas=-2), "replicas must be a whole number from 1 to 2147483647"),
    # int32 in Deployment, LeaderWorkerSet and LLMInferenceService: refused before pods or cost use it
    (Request("baseline", "gpu", replicas=2**31), "replicas must be a whole number from 1 to 2147483647, got 2147483648"),
    (Request("moe", "gpu", replicas=10**26), "replicas must be a whole number from 1 to 2147483647"),
    (Request("baseline", "gpu", models=("qwen",)), "is not a Hugging Face id (org/name) or a local path"),
    (Request("baseline", "gpu", models=("a/b", "c/d")), "use --pattern=multimodel"),
    (Request("multimodel", "gpu", models=("a/b",)), "needs at least 2 models"),
    (Request("multimodel", "gpu", models=("a/b", "a/b")), "must be distinct"),
    (Request("baseline", "gpu", namespace="kube-system"), "refusing to deploy into 'kube-system'"),
    (Request("baseline", "gpu", namespace="Bad_NS"), "not a valid Kubernetes name"),
    (Request("baseline", "gpu", provider="nginx"), "unknown gateway provider 'nginx'"),
    (Request("baseline", "gpu", kserve_api="v1"), "unknown KServe API version 'v1'"),
    (Request("baseline", "tpu", extra_args=("--tensor-parallel-size=2",)), "tensor-parallel size must be 4"),
    (Request("baseline", "sim", pod_security="strict"),
     "unknown pod security level 'strict'; valid: restricted, baseline, privileged"),
    # KServe's data-parallel preset adds capabilities only `privileged` admits
    (Request("baseline", "sim", monitoring="grafana"), "unknown monitoring 'grafana'; valid: none, prometheus, gmp"),
    (Request("baseline", "sim", monitoring="gmp"), "llm-d-modelservice v0.4.12 makes only Prometheus Operator"),
    (Request("moe", "gpu", "kserve", pod_security="baseline"),
     "--pod-security=baseline is too strict for these pods: KServe v0.20's data-parallel preset"),
])
def test_bad_input_is_refused_with_valid_choices(request_, message):
    with pytest.raises(LightrailError) as err:
        build_plan(request_)
    assert message in str(err.value)


def test_supported_combinations_lists_accel_and_stack():
    assert supported_combinations("moe") == ["gpu/llmd", "gpu/kserve"]


def test_the_printed_plan_of_caching_on_tpu():
    """What `invoke plan --json` prints, checked against the catalog's facts (v6e 2x2 = 4 chips per
    pod, 3 replicas) and prices.yaml (chips, then each pod's vCPUs and GiB), not against itself."""
    data = json.loads(json.dumps(build_plan(Request("caching", "tpu", "llmd")).to_dict()))
    assert {k: data[k] for k in ("pattern", "accel", "accel_type", "stack", "namespace")} == {
        "pattern": "caching", "accel": "tpu", "accel_type": "v6e-2x2", "stack": "llmd", "namespace": "lightrail"}
    assert data["request"] == {"pattern": "caching", "accel": "tpu", "stack": "llmd", "models": [], "replicas": None,
                               "namespace": "lightrail", "gpu_type": None, "topology": None, "provider": "istio",
                               "kserve_api": "v1alpha2", "kserve_tls": False, "extra_args": [], "hf_token": False,
                               "front": "", "engine": "vllm", "aliases": [], "weights": "hf", "cache_size": None,
                               "pod_security": None, "monitoring": "none", "tls_secret": None,
                               "cert_manager_issuer": None, "hostname": None}
    # the strictest Pod Security level, pinned to the Kubernetes minor the render is validated against
    assert data["pod_security"] == {"level": "restricted", "namespace_labels": {
        f"pod-security.kubernetes.io/{m}{v}": ("v1.34" if v else "restricted")
        for m in ("enforce", "audit", "warn") for v in ("", "-version")}}
    assert data["labels"] == promised_labels("caching", "tpu", "llmd")
    assert data["gateway"] == {"name": "caching-gateway", "provider": "istio", "class_name": "istio", "namespace": ""}
    (server,) = data["servers"]
    assert server == {
        "name": "caching-qwen2-5-3b-instruct", "model": "Qwen/Qwen2.5-3B-Instruct",
        "source": "hf://Qwen/Qwen2.5-3B-Instruct", "image": CATALOG.versions["images"]["vllm-tpu"], "replicas": 3,
        "args": ["--max-model-len=4096", "--enable-prefix-caching", "--tensor-parallel-size=4"],
        "env": {"VLLM_XLA_CACHE_PATH": "/tmp/xla-cache"},
        "startup": {"periodSeconds": 30, "failureThreshold": 120},   # XLA warm-up: an hour in 30 s steps
        "resources": {"cpu": "8", "memory": "64Gi", "google.com/tpu": "4"},
        "node_selector": {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
                          "cloud.google.com/gke-tpu-topology": "2x2"},
        "tolerations": [{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}],
        "tensor_parallel": 4, "multinode": None, "command": [], "engine": "vllm", "aliases": [],
        # the download volume holds what 4 v6e chips hold (the chart's default would be 5Mi)
        "weights": {"kind": "hf", "uri": "hf://Qwen/Qwen2.5-3B-Instruct", "load": "Qwen/Qwen2.5-3B-Instruct",
                    "cache": "128Gi", "claim": None, "access_mode": None},
        "pods": 3}
    assert data["router"] == {"scorers": {"prefix-cache-scorer": 3, "queue-scorer": 2, "kv-cache-utilization-scorer": 2},
                              "body_based_routing": False, "epp_image": CATALOG.versions["images"]["epp"]}
    assert [(u["name"], u["source"]) for u in data["units"]] == [
        ("caching-infra", "llm-d-infra"), ("caching-qwen2-5-3b-instruct", "llm-d-router-gateway"),
        ("caching-qwen2-5-3b-instruct-ms", "llm-d-modelservice")]
    assert data["images"] == [CATALOG.versions["images"]["vllm-tpu"], CATALOG.versions["images"]["epp"]]
    assert (data["replicas_total"], data["pods_total"], data["accelerators_total"]) == (3, 3, {"google.com/tpu": 12})
    prices = CATALOG.prices
    per_hour = 12 * prices["accelerators"]["google.com/tpu"]["v6e"] + 3 * (
        8 * prices["cpu"]["per_vcpu_hour"] + 64 * prices["cpu"]["per_gib_hour"])
    assert data["cost"] == {"per_hour": round(per_hour, 2), "per_day": round(per_hour * 24, 2), "currency": "USD",
                            "basis": "12 x google.com/tpu v6e @ 2.7/h; pod CPU and memory at patterns/prices.yaml "
                                     "rates; model servers only"}


def test_server_names_are_unique_slugs_of_the_models():
    plan = build_plan(Request("multimodel", "gpu", "llmd", models=("a/Qwen", "b/qwen", "/models/qwen/")))
    assert [s.name for s in plan.servers] == ["multimodel-qwen", "multimodel-qwen-2", "multimodel-qwen-3"]
    (long,) = build_plan(Request("baseline", "gpu", "llmd", models=("org/" + "X" * 60,))).servers
    assert long.name == "baseline-" + "x" * 40


@pytest.mark.parametrize("pattern,accel,args", [
    ("baseline", "sim", ["--mode=random", "--force-dummy-tokenizer", "--time-to-first-token=20",
                         "--inter-token-latency=5", "--max-model-len=4096"]),
    ("baseline", "cpu", ["--max-model-len=4096"]),
    ("moe", "gpu", ["--max-model-len=8192", "--enable-expert-parallel", "--data-parallel-size=8",
                    "--data-parallel-size-local=4"]),
])
def test_model_server_arguments_in_full(pattern, accel, args):
    (server,) = build_plan(Request(pattern, accel, "llmd")).servers
    assert list(server.args) == args


def _invoke(*args):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_plan_json_and_errors():
    ok = _invoke("plan", "--pattern=caching", "--accel=tpu", "--stack=kserve", "--output=json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["accelerators_total"] == {"google.com/tpu": 12} and data["replicas_total"] == 3
    assert data["servers"][0]["node_selector"]["cloud.google.com/gke-tpu-topology"] == "2x2"
    assert data["cost"]["per_day"] == pytest.approx(data["cost"]["per_hour"] * 24, abs=0.25)
    bad = _invoke("plan", "--pattern=caching", "--accel=tpu", "--replicas=zero")
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --replicas must be a whole number from 1 to 2147483647, got 'zero'"
    human = _invoke("plan", "--pattern=multimodel", "--accel=gpu", "--model=a/x", "--model=b/y")
    assert human.returncode == 0 and "multimodel-x" in human.stdout and "USD/hour" in human.stdout


def test_cli_patterns_lists_unsupported_reasons():
    out = _invoke("patterns", "--output=json")
    rows = json.loads(out.stdout)
    assert len(rows) == len(ALL)
    moe_cpu = next(r for r in rows if (r["pattern"], r["accel"], r["stack"]) == ("moe", "cpu", "llmd"))
    assert not moe_cpu["supported"] and "data/expert-parallel" in moe_cpu["reason"]


@pytest.mark.parametrize("pattern, stack, level", [
    ("baseline", "llmd", "restricted"), ("baseline", "kserve", "restricted"),
    ("moe", "llmd", "restricted"),      # vLLM's own expert parallelism: no extra capabilities
    ("moe", "kserve", "privileged"),    # KServe's data-parallel preset adds IPC_LOCK, SYS_RAWIO, NET_RAW
])
def test_the_default_pod_security_is_the_strictest_the_pods_meet(pattern, stack, level):
    plan = build_plan(Request(pattern, "gpu", stack))
    assert plan.pod_security == level
    assert plan.namespace_labels["pod-security.kubernetes.io/enforce"] == level
    assert build_plan(Request(pattern, "gpu", stack, pod_security="privileged")).pod_security == "privileged"
