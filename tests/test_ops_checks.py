"""`invoke doctor` checks and `invoke prereqs` planning, from recorded cluster objects."""
from __future__ import annotations

import copy

import pytest

from lightrail.ops import checks as ck
from lightrail.ops.flows import tool_versions
from lightrail.ops.objects import meta
from lightrail.ops.prereqs import plan_prereqs
from lightrail.ops.target import Target
from lightrail.plan import Request, build_plan
from tests.test_ops_readiness import load

CRDS = load("ops/crds.yaml")
NODES = load("ops/nodes.yaml")
GATEWAYS = load("ops/gateways.yaml")
PODS = [o for o in load("ops/workloads.yaml") if o["kind"] == "Pod"]
TARGET = Target("gke_proj_us-central1_prod", "lightrail", "--kube-context")


def facts(**kw) -> ck.Facts:
    base = dict(context=TARGET.context, server_version="v1.34.2-gke.1200", crds=CRDS,
                gateway_classes=[g for g in GATEWAYS if g["kind"] == "GatewayClass"],
                gateways=[g for g in GATEWAYS if g["kind"] == "Gateway"], nodes=NODES, pods=[], secrets=[])
    return ck.Facts(**{**base, **kw})


def by_name(checks: list[ck.Check]) -> dict[str, ck.Check]:
    return {c.name: c for c in checks}


def test_installed_tools_match_the_pins():
    found = tool_versions()
    assert found == {"helm": "v3.19.0", "helmfile": "0.166.0", "kubectl": "v1.34.5"}
    assert [c.status for c in ck.tool_checks(found)] == ["ok", "ok", "ok"]


def test_tool_mismatch_and_absence_fail_with_a_fix():
    checks = by_name(ck.tool_checks({"helm": "v3.14.2", "helmfile": None, "kubectl": "v1.34.5"}))
    assert checks["tool helm"].status == "fail" and checks["tool helm"].detail == "3.14.2, pinned 3.19.0"
    assert checks["tool helmfile"].status == "fail" and checks["tool helmfile"].fix == "run scripts/setup"
    assert checks["tool kubectl"].status == "ok"


def test_unreachable_cluster_is_the_only_cluster_check():
    checks = ck.cluster_checks(ck.Facts("kind-x", error="connection refused"), "llmd", "istio")
    assert [(c.name, c.status) for c in checks] == [("cluster", "fail")]
    assert "kind-x" in checks[0].detail and "--kube-context" in checks[0].fix


def test_everything_present_for_llmd_gpu_baseline():
    plan = build_plan(Request(pattern="baseline", accel="gpu"))
    checks = ck.cluster_checks(facts(), "llmd", "istio", plan, token_given=True)
    assert [c.status for c in checks] == ["ok"] * len(checks), [c for c in checks if c.status != "ok"]
    names = [c.name for c in checks]
    assert names[:4] == ["cluster", "CRD Gateway gateway.networking.k8s.io/v1", "CRD HTTPRoute gateway.networking.k8s.io/v1",
                         "CRD InferencePool inference.networking.k8s.io/v1"]
    assert "GatewayClass istio" in names and "capacity" in names and "HF token" in names


def rows(checks: list[ck.Check]) -> list[tuple[str, str, str, str]]:
    return [(c.name, c.status, c.detail, c.fix) for c in checks]


CRD_OK = [("CRD Gateway gateway.networking.k8s.io/v1", "ok", "served (v1.6.1)", ""),
          ("CRD HTTPRoute gateway.networking.k8s.io/v1", "ok", "served (v1.6.1)", ""),
          ("CRD InferencePool inference.networking.k8s.io/v1", "ok", "served (v1.6.0)", "")]
CLUSTER_OK = ("cluster", "ok", "context gke_proj_us-central1_prod, Kubernetes v1.34.2-gke.1200", "")
L4_FITS = ("capacity", "ok", "1 model-server pod(s) of cpu: 8, memory: 32Gi, nvidia.com/gpu: 1 fit (1 would) on 1 "
           "schedulable node(s) matching cloud.google.com/gke-accelerator=nvidia-l4", "")


def test_doctor_reads_in_full_for_llmd_and_for_kserve_missing_its_pieces():
    """What `invoke doctor` prints, row by row: name, status, detail and the fix."""
    plan = build_plan(Request(pattern="baseline", accel="gpu"))
    assert rows(ck.cluster_checks(facts(), "llmd", "istio", plan, token_given=False)) == [
        CLUSTER_OK, *CRD_OK,
        ("GatewayClass istio", "ok", "accepted (istio.io/gateway-controller)", ""), L4_FITS,
        ("HF token", "warn", "none given and no Secret lightrail-hf-token in lightrail: gated models "
                             "(Qwen/Qwen2.5-3B-Instruct) will fail to download",
         "export HF_TOKEN=... or pass --hf-token-file=FILE")]
    kserve = build_plan(Request(pattern="baseline", accel="gpu", stack="kserve"))
    crds = [c for c in CRDS if c["spec"]["group"] != "serving.kserve.io"]
    assert rows(ck.cluster_checks(facts(crds=crds, gateways=[]), "kserve", "istio", kserve, token_given=True)) == [
        CLUSTER_OK, *CRD_OK,
        ("CRD LLMInferenceService serving.kserve.io/v1alpha2", "fail", "not installed",
         "install the component that provides LLMInferenceService (serving.kserve.io)"),
        ("KServe ingress gateway", "fail", "Gateway kserve/kserve-ingress-gateway not found",
         "install KServe with its LLMInferenceService controller and Istio (see docs/operations.md)"),
        L4_FITS, ("HF token", "ok", "given; deploy stores it in Secret lightrail-hf-token", "")]
    assert rows(ck.cluster_checks(facts(), "kserve", "istio"))[-1] == (
        "KServe ingress gateway", "ok", "Gateway kserve/kserve-ingress-gateway", "")
    assert ck.failed(ck.cluster_checks(facts(crds=crds, gateways=[]), "kserve", "istio")) == \
        [c for c in ck.cluster_checks(facts(crds=crds, gateways=[]), "kserve", "istio") if c.status == "fail"] != []


def test_gateway_class_rows_per_provider_in_full():
    assert rows([ck.gateway_check(facts(), "llmd", p) for p in ("gke", "agentgateway")]) == [
        ("GatewayClass gke-l7-regional-external-managed", "fail", "not accepted by its controller: Waiting for controller",
         "check the gke controller's logs"),
        ("GatewayClass agentgateway", "fail", "not found (provider agentgateway)",
         "install the agentgateway gateway controller")]
    assert rows([ck.gateway_check(facts(gateway_classes=[]), "llmd", "istio")]) == [
        ("GatewayClass istio", "fail", "not found (provider istio)",
         "install Istio with the inference extension (`invoke prereqs --istio`)")]


def test_tool_rows_in_full():
    assert rows(ck.tool_checks({"helm": "v3.19.0", "helmfile": None, "kubectl": "v1.33.0"})) == [
        ("tool helm", "ok", "3.19.0", ""), ("tool helmfile", "fail", "not installed in .tools/bin", "run scripts/setup"),
        ("tool kubectl", "fail", "1.33.0, pinned 1.34.5", "run scripts/setup")]


def test_missing_old_and_unserved_crds():
    crds = copy.deepcopy(CRDS)
    crds = [c for c in crds if c["spec"]["names"]["kind"] != "InferencePool"]
    gateway = next(c for c in crds if c["spec"]["names"]["kind"] == "Gateway")
    gateway["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] = "v1.2.1"
    route = next(c for c in crds if c["spec"]["names"]["kind"] == "HTTPRoute")
    route["spec"]["versions"] = [v for v in route["spec"]["versions"] if v["name"] != "v1"]
    checks = by_name(ck.crd_checks(crds, ck.required_crds("llmd", None, [])))
    pool = checks["CRD InferencePool inference.networking.k8s.io/v1"]
    assert (pool.status, pool.detail, pool.fix) == ("fail", "not installed", "run `invoke prereqs`")
    gw = checks["CRD Gateway gateway.networking.k8s.io/v1"]
    assert gw.status == "warn" and gw.detail == "v1.2.1, older than the pinned v1.6.1"
    assert checks["CRD HTTPRoute gateway.networking.k8s.io/v1"].detail == "installed, but serves v1beta1"
    assert rows(checks.values()) == [
        ("CRD Gateway gateway.networking.k8s.io/v1", "warn", "v1.2.1, older than the pinned v1.6.1",
         "run `invoke prereqs`"),
        ("CRD HTTPRoute gateway.networking.k8s.io/v1", "fail", "installed, but serves v1beta1", "run `invoke prereqs`"),
        ("CRD InferencePool inference.networking.k8s.io/v1", "fail", "not installed", "run `invoke prereqs`")]


def test_a_crd_not_yet_established_fails_until_it_is():
    """Mutant M3 (skip the `Established` check): a CRD applied a moment ago serves its versions on
    paper, but the API server answers 404 for its kind until Established is True."""
    crds = copy.deepcopy(CRDS)
    pool = next(c for c in crds if c["spec"]["names"]["kind"] == "InferencePool")
    established = next(c for c in pool["status"]["conditions"] if c["type"] == "Established")
    established.update(status="False", reason="Installing", message="the initial names have been accepted")
    name = "CRD InferencePool inference.networking.k8s.io/v1"
    check = by_name(ck.crd_checks(crds, ck.required_crds("llmd", None, [])))[name]
    assert (check.status, check.detail, check.fix) == ("fail", "installed but not Established yet",
                                                       "wait a few seconds and retry")
    del pool["status"]   # just created: the API server has not written a status yet
    assert by_name(ck.crd_checks(crds, ck.required_crds("llmd", None, [])))[name].status == "fail"
    assert by_name(ck.crd_checks(CRDS, ck.required_crds("llmd", None, [])))[name].status == "ok"


def test_required_crds_follow_the_rendered_objects_and_the_pattern():
    plan = build_plan(Request(pattern="moe", accel="gpu"))
    need = ck.required_crds("llmd", plan, [
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule"},
        {"apiVersion": "apps/v1", "kind": "Deployment"}, {"apiVersion": "v1", "kind": "Service"}])
    kinds = [(g, k, v) for g, k, v, _ in need]
    assert ("leaderworkerset.x-k8s.io", "LeaderWorkerSet", "v1") in kinds
    assert ("networking.istio.io", "DestinationRule", "v1") in kinds
    assert not any(k in ("Deployment", "Service") for _, k, _ in kinds)
    kserve = build_plan(Request(pattern="baseline", accel="gpu", stack="kserve", kserve_api="v1alpha1"))
    assert ("serving.kserve.io", "LLMInferenceService", "v1alpha1", "kserve-llmisvc") in ck.required_crds("kserve", kserve, [])


def test_gateway_class_per_provider_and_kserve_gateway():
    assert ck.gateway_check(facts(), "llmd", "istio").status == "ok"
    gke = ck.gateway_check(facts(), "llmd", "gke")
    assert gke.status == "fail" and "Waiting for controller" in gke.detail
    agw = ck.gateway_check(facts(), "llmd", "agentgateway")
    assert agw.status == "fail" and agw.detail == "not found (provider agentgateway)"
    assert ck.gateway_check(facts(), "kserve", "istio").status == "ok"
    missing = ck.gateway_check(facts(gateways=[]), "kserve", "istio")
    assert missing.status == "fail" and "kserve/kserve-ingress-gateway" in missing.detail


def test_tpu_capacity_says_how_many_chips_are_missing():
    plan = build_plan(Request(pattern="caching", accel="tpu"))   # 3 pods x 4 chips on v6e 2x2
    check = ck.capacity_check(plan, NODES, [])
    assert check.status == "fail"
    assert "only 1 of 3 model-server pod(s) fit on the 1 schedulable node(s) matching" in check.detail
    assert "missing 8 google.com/tpu" in check.detail
    assert "cloud.google.com/gke-tpu-topology=2x2" in check.detail and "--replicas" in check.fix
    assert ck.capacity_check(build_plan(Request(pattern="caching", accel="tpu", replicas=1)), NODES, []).status == "ok"


def test_gpu_capacity_skips_cordoned_and_not_ready_nodes():
    plan = build_plan(Request(pattern="baseline", accel="gpu", replicas=3))   # 3 L4 nodes, only one usable
    check = ck.capacity_check(plan, NODES, [])
    assert check.status == "fail" and "only 1 of 3" in check.detail and "missing 2 nvidia.com/gpu" in check.detail
    assert "gke-accelerator=nvidia-l4" in check.detail
    h100 = ck.capacity_check(build_plan(Request(pattern="baseline", accel="gpu", gpu_type="h100")), NODES, [])
    assert h100.status == "fail" and "on the 0 schedulable node(s)" in h100.detail


def test_capacity_counts_other_pods_but_not_our_own():
    plan = build_plan(Request(pattern="baseline", accel="gpu"))
    ours = next(p for p in PODS if meta(p)["name"].startswith("baseline-qwen2-5-3b-instruct-decode"))
    assert ck.capacity_check(plan, NODES, [ours]).status == "ok"    # a redeploy reuses its own GPU
    other = copy.deepcopy(ours)
    other["metadata"].update(name="someone-else", namespace="team-b")
    assert ck.capacity_check(plan, NODES, [other]).status == "fail"
    done = copy.deepcopy(other)
    done["status"]["phase"] = "Succeeded"
    assert ck.capacity_check(plan, NODES, [done]).status == "ok"


def test_a_migration_target_needs_room_beside_its_own_running_pods():
    """The target of `invoke migrate` runs beside the source, whose pods carry the same server name."""
    plan = build_plan(Request(pattern="baseline", accel="gpu", stack="kserve"))
    ours = next(p for p in PODS if meta(p)["name"].startswith("baseline-qwen2-5-3b-instruct-decode"))
    assert ck.capacity_check(plan, NODES, [ours]).status == "ok"
    beside = ck.capacity_check(plan, NODES, [ours], beside=True)
    assert beside.status == "fail" and "only 0 of 1 model-server pod(s) fit" in beside.detail, beside


def test_sim_needs_only_cpu_and_memory():
    plan = build_plan(Request(pattern="caching", accel="sim"))
    check = ck.capacity_check(plan, NODES, [])
    assert check.status == "ok" and check.detail.endswith("fit (297 would) on 2 schedulable node(s)")


def test_hf_token_check():
    gpu = build_plan(Request(pattern="baseline", accel="gpu"))
    assert ck.token_check(gpu, [], False).status == "warn"
    assert ck.token_check(gpu, [], True).status == "ok"
    with_secret = build_plan(Request(pattern="baseline", accel="gpu", hf_token=True))
    assert ck.token_check(with_secret, ["lightrail-hf-token"], False).detail == "Secret lightrail-hf-token exists"
    assert "not needed" in ck.token_check(build_plan(Request(pattern="baseline", accel="sim")), [], False).detail
    assert rows([ck.token_check(build_plan(Request(pattern="multimodel", accel="gpu")), ["lightrail-hf-token"], False),
                 ck.token_check(build_plan(Request(pattern="baseline", accel="sim")), [], False)]) == [
        ("HF token", "warn", "none given and no Secret lightrail-hf-token in lightrail: gated models "
                             "(Qwen/Qwen2.5-3B-Instruct, microsoft/Phi-3-mini-4k-instruct) will fail to download",
         "export HF_TOKEN=... or pass --hf-token-file=FILE"),
        ("HF token", "ok", "not needed (no model is downloaded from Hugging Face)", "")]


# ---------------------------------------------------------------------------------------------
# prereqs


def test_prereqs_on_an_empty_cluster_install_pinned_sources_in_order():
    result = plan_prereqs(ck.Facts("kind-x"), TARGET, "llmd", "istio", istio=True)
    commands = [" ".join(s.args) for s in result.steps]
    assert commands[0].endswith("-f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml")
    assert "gateway-api-inference-extension/releases/download/v1.6.0/manifests.yaml" in commands[1]
    assert "lws/releases/download/v0.10.0/manifests.yaml" in commands[2]
    assert "deployment/lws-controller-manager" in commands[3]
    # model aliases: the endpoint picker looks for this CRD once, at start, so it comes before any deploy
    assert commands[4].endswith("llm-d/llm-d-router/v0.10.0/config/crd/bases/llm-d.ai_inferencemodelrewrites.yaml")
    assert result.steps[5].tool == "helm" and "istio-base base" in commands[5] and "--version 1.29.9" in commands[5]
    assert "pilot.env.ENABLE_GATEWAY_API_INFERENCE_EXTENSION=true" in commands[6]
    assert "gateways.seccompProfile.type=RuntimeDefault" in commands[6]   # Pod Security restricted
    assert all(s.args[0] in (f"--context={TARGET.context}", f"--kube-context={TARGET.context}") for s in result.steps)
    assert result.missing == []


def test_prereqs_twice_installs_nothing():
    classes = [g for g in GATEWAYS if g["kind"] == "GatewayClass"]
    result = plan_prereqs(facts(gateway_classes=classes), TARGET, "llmd", "istio", istio=True)
    assert result.steps == [] and result.missing == []
    assert result.present == ["Gateway API CRDs v1.6.1", "InferencePool CRDs v1.6.0",
                              "LeaderWorkerSet (installed; version not recorded)",
                              "InferenceModelRewrite CRD (llm-d-router v0.10.0)", "GatewayClass istio"]


def test_prereqs_upgrade_old_crds_and_name_what_they_cannot_install():
    crds = copy.deepcopy(CRDS)
    pool = next(c for c in crds if c["spec"]["names"]["kind"] == "InferencePool")
    pool["metadata"]["annotations"]["inference.networking.k8s.io/bundle-version"] = "v1.0.1"
    result = plan_prereqs(facts(crds=crds, gateway_classes=[]), TARGET, "llmd", "istio")
    assert [s.title for s in result.steps] == ["install InferencePool CRDs v1.6.0"]
    assert result.missing == ["GatewayClass istio: install the istio gateway controller (or rerun with --istio to "
                              "install Istio)"]
    kserve = plan_prereqs(facts(crds=[c for c in CRDS if c["spec"]["group"] != "serving.kserve.io"], gateways=[]),
                          TARGET, "kserve")
    assert kserve.steps == []
    assert [m.split(" (")[0] for m in kserve.missing] == [
        "KServe v0.20.0 with the LLMInferenceService controller",
        "Istio 1.29.9 and KServe's ingress Gateway kserve/kserve-ingress-gateway"]


@pytest.mark.parametrize("provider", ["gke", "agentgateway"])
def test_prereqs_never_install_other_gateway_providers(provider):
    result = plan_prereqs(facts(gateway_classes=[]), TARGET, "llmd", provider, istio=True)
    assert result.steps == [] and provider in result.missing[0]


def test_doctor_without_a_reachable_cluster_fails_that_check_alone():
    """`invoke doctor` on a context whose server does not answer: the tools are still checked (for real),
    the cluster check fails, nothing else is judged (the cluster checks run against the local control
    plane in tests/e2e/test_control_plane.py)."""
    from lightrail.ops import flows

    checks = flows.doctor(TARGET, None, "llmd", "istio")
    assert [c.name for c in checks if c.status == "fail"] == ["cluster"]
    table = "\n".join(flows.check_table(checks))
    assert "fail  cluster" in table and "not reachable" in table
    assert {c.name for c in checks if c.status == "ok"} >= {"tool helm", "tool helmfile", "tool kubectl"}
