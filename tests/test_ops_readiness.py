"""Readiness from observed objects (tests/fixtures/ops, real API shapes) and the watch loop."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lightrail.ops import readiness, wait
from lightrail.ops.objects import meta
from lightrail.render import load_manifests
from lightrail.validate import validate_objects

FIXTURES = Path(__file__).parent / "fixtures"


def load(*names: str) -> list[dict]:
    return [o for n in names for o in load_manifests((FIXTURES / n).read_text())]


OBJECTS = load("ops/workloads.yaml", "ops/routing.yaml", "ops/gateways.yaml", "cluster/gateway-programmed.yaml",
               "cluster/llmisvc-ready.yaml", "cluster/pod-llmisvc-ready.yaml")
PODS = [o for o in OBJECTS if o["kind"] == "Pod"]
EVENTS = [o for o in OBJECTS if o["kind"] == "Event"]
CRASH_LOG = (FIXTURES / "ops" / "crashloop.log").read_text()


def obj(kind: str, name: str) -> dict:
    return copy.deepcopy(next(o for o in OBJECTS if o["kind"] == kind and meta(o)["name"] == name))


def assess(kind: str, name: str, **kw) -> readiness.State:
    live = obj(kind, name)
    return readiness.assess(live, live, kw.get("pods", PODS), kw.get("events", EVENTS), kw.get("logs"))


# What `deploy` shows for each recorded observation, in full: who, ready or not, the summary, why,
# and whether waiting can help (the reasons quote the pods' and events' own messages).
SCHEDULING = ("0/5 nodes are available: 1 Insufficient google.com/tpu, 1 node(s) had untolerated taint "
              "{node.kubernetes.io/unreachable: }, 3 node(s) didn't match Pod's node affinity/selector. preemption: "
              "0/5 nodes are available: 1 No preemption victims found for incoming pod, 4 Preemption is not helpful "
              "for scheduling.")
PULL = ('Back-off pulling image "docker.io/vllm/vllm-openai:v0.99.0": ErrImagePull: rpc error: code = NotFound desc = '
        'failed to pull and unpack image "docker.io/vllm/vllm-openai:v0.99.0": failed to resolve reference '
        '"docker.io/vllm/vllm-openai:v0.99.0": docker.io/vllm/vllm-openai:v0.99.0: not found')
EXPECTED = {
    ("Deployment", "baseline-qwen2-5-3b-instruct-decode"): (True, "1/1 ready", "", False),
    ("Deployment", "caching-qwen2-5-3b-instruct-decode"): (False, "1/3 ready", (
        f"pod caching-qwen2-5-3b-instruct-decode-6d9f7c5b8d-b2b2b cannot be scheduled: {SCHEDULING} (each pod needs "
        "google.com/tpu: 4; check `invoke doctor` for nodes with free accelerators)"), False),
    ("Deployment", "baseline-phi-3-mini-4k-instruct-decode"): (False, "0/1 ready", (
        "pod baseline-phi-3-mini-4k-instruct-decode-6d9f7c5b8d-p0p0p: cannot pull image "
        f"docker.io/vllm/vllm-openai:v0.99.0: {PULL}"), True),
    ("Deployment", "baseline-smollm2-360m-instruct-decode"): (False, "0/1 ready", (
        "pod baseline-smollm2-360m-instruct-decode-6d9f7c5b8d-q9q9q: container vllm is crash-looping (4 restarts; "
        "last exit code 1 (Error))"), True),
    ("Deployment", "baseline-qwen2-5-0-5b-instruct-decode"): (False, "0/1 ready", (
        "pod baseline-qwen2-5-0-5b-instruct-decode-6d9f7c5b8d-s1s1s: container vllm: CreateContainerConfigError: "
        'secret "lightrail-hf-token" not found'), True),
    ("Deployment", "caching-phi-3-mini-4k-instruct-decode"): (
        False, "waiting for the controller", "status is for an older generation", False),
    ("Deployment", "caching-llama-3-1-8b-instruct-decode"): (False, "0/1 ready", (
        "pod caching-llama-3-1-8b-instruct-decode-6d9f7c5b8d-r4r4r is running but not ready: Readiness probe failed: "
        'Get "http://10.8.2.14:8000/v1/models": dial tcp 10.8.2.14:8000: connect: connection refused'), True),
    ("HTTPRoute", "baseline-qwen2-5-3b-instruct"): (True, "Accepted", "", False),
    ("HTTPRoute", "caching-qwen2-5-3b-instruct"): (False, "not ResolvedRefs by caching-gateway", (
        "BackendNotFound: backend(caching-qwen2-5-3b-instruct.lightrail.svc.cluster.local) not found"), False),
    ("InferencePool", "baseline-qwen2-5-3b-instruct"): (True, "Accepted", "", False),
    ("LeaderWorkerSet", "moe-deepseek-v2-lite-chat"): (True, "1/1 groups ready", "", False),
    ("LLMInferenceService", "baseline-qwen2-5-0-5b-instruct"): (False, "not Ready", (
        "Ready: Deployment does not have minimum availability.; WorkloadsReady: Deployment does not have minimum "
        "availability.; pod baseline-qwen2-5-0-5b-instruct-kserve-7f8c9d-bbbbb cannot be scheduled: 0/5 nodes are "
        "available: 1 Insufficient cpu, 4 node(s) had untolerated taint {nvidia.com/gpu: present}."), False),
    ("LLMInferenceService", "baseline-qwen2-5-3b-instruct"): (True, "Ready", "", False),
    ("GatewayClass", "istio"): (True, "exists", "", False),
    ("Gateway", "kserve-ingress-gateway"): (True, "Programmed", "", False),
    ("Gateway", "caching-gateway"): (True, "Programmed", "", False),
    ("Gateway", "caching-gateway-stale"): (
        False, "waiting for the gateway controller", "no current Programmed condition", False),
    ("Gateway", "baseline-gateway-kind"): (
        True, "Accepted", "no external address assigned; reach it with a port-forward", False),
    ("Gateway", "baseline-gateway-noclass"): (False, "not Accepted", "Pending: Waiting for controller", False),
}


@pytest.mark.parametrize("kind,name", list(EXPECTED))
def test_each_recorded_observation_reads_as_the_user_sees_it(kind, name):
    live = obj(kind, name)
    where = f"{meta(live)['namespace']}/{name}" if meta(live).get("namespace") else name
    assert assess(kind, name) == readiness.State(f"{kind} {where}", *EXPECTED[(kind, name)])


def _lws_group_crashing(live):
    live["status"].update(readyReplicas=0)
    live["status"]["conditions"][0].update(status="False", reason="GroupsNotReady", message="not ready")
    crash = copy.deepcopy(next(p for p in PODS if meta(p)["name"].startswith("baseline-smollm2")))
    crash["metadata"].update(name="moe-deepseek-v2-lite-chat-0-1",
                             labels={"leaderworkerset.sigs.k8s.io/name": "moe-deepseek-v2-lite-chat"})
    return [crash]


def _set_condition(kind, **fields):
    def change(live):
        next(c for c in live["status"]["conditions"] if c["type"] == kind).update(fields)
    return change


def _route_parent_condition(kind, **fields):
    def change(live):
        next(c for c in live["status"]["parents"][0]["conditions"] if c["type"] == kind).update(fields)
    return change


def _pool_accepted_only(live):
    parent = live["status"]["parents"][0]
    parent["conditions"] = [c for c in parent["conditions"] if c["type"] == "Accepted"]


def _llmisvc_stale(live):
    live["metadata"]["generation"] = live["status"]["observedGeneration"] + 1


def _llmisvc_no_conditions(live):
    live["status"]["conditions"] = []


# (kind, name, change to the live object returning the pods to use, or None for none) -> the State's tail
VARIANTS = [
    ("LeaderWorkerSet", "moe-deepseek-v2-lite-chat", _lws_group_crashing, (
        False, "0/1 groups ready", "pod moe-deepseek-v2-lite-chat-0-1: container vllm is crash-looping (4 restarts; "
        "last exit code 1 (Error))", True)),
    ("LeaderWorkerSet", "moe-deepseek-v2-lite-chat", _set_condition("Available", status="False"),
     (False, "1/1 groups ready", "no pods yet", False)),
    ("Gateway", "caching-gateway", _set_condition("Programmed", status="False", reason="Invalid", message="bad port"),
     (False, "not Programmed", "Invalid: bad port", False)),
    ("Gateway", "baseline-gateway-kind", _set_condition("Accepted", status="False", reason="Invalid", message="x"),
     (False, "not Accepted", "Invalid: x", False)),
    ("HTTPRoute", "baseline-qwen2-5-3b-instruct", _route_parent_condition("Accepted", status="False",
                                                                           reason="NotAllowedByListeners", message="no"),
     (False, "not Accepted by baseline-gateway", "NotAllowedByListeners: no", False)),
    ("HTTPRoute", "baseline-qwen2-5-3b-instruct", _route_parent_condition("ResolvedRefs", observedGeneration=0),
     (False, "not ResolvedRefs by baseline-gateway", "no current condition", False)),
    ("InferencePool", "baseline-qwen2-5-3b-instruct", _pool_accepted_only, (True, "Accepted", "", False)),
    ("LLMInferenceService", "baseline-qwen2-5-3b-instruct", _llmisvc_stale,
     (False, "waiting for KServe", "status is for an older generation", False)),
    ("LLMInferenceService", "baseline-qwen2-5-0-5b-instruct", _llmisvc_no_conditions, (False, "not Ready", (
        "pod baseline-qwen2-5-0-5b-instruct-kserve-7f8c9d-bbbbb cannot be scheduled: 0/5 nodes are available: 1 "
        "Insufficient cpu, 4 node(s) had untolerated taint {nvidia.com/gpu: present}."), False)),
]


@pytest.mark.parametrize("kind,name,change,expected", VARIANTS,
                         ids=[f"{k}-{c.__name__}" for k, _, c, _ in VARIANTS])
def test_not_ready_paths_of_each_kind_read_in_full(kind, name, change, expected):
    live = obj(kind, name)
    pods = change(live)
    state = readiness.assess(live, live, PODS if pods is None else pods, EVENTS if pods is None else [])
    assert state == readiness.State(f"{kind} lightrail/{name}", *expected)
    bare = copy.deepcopy(live)
    bare.pop("status")
    assert not readiness.assess(bare, bare, [], []).ready or kind == "InferencePool"


def test_fixtures_are_real_api_shapes():
    """Every recorded observation validates against the Kubernetes and CRD schemas (status included)."""
    objects = load(*(f"ops/{p.name}" for p in sorted((FIXTURES / "ops").glob("*.yaml"))))
    assert len(objects) > 30
    assert validate_objects(objects) == []


def test_ready_deployment():
    state = assess("Deployment", "baseline-qwen2-5-3b-instruct-decode")
    assert state == readiness.State("Deployment lightrail/baseline-qwen2-5-3b-instruct-decode", True, "1/1 ready")


def test_status_of_an_older_generation_is_not_trusted():
    state = assess("Deployment", "caching-phi-3-mini-4k-instruct-decode")
    assert not state.ready and "older generation" in state.reason
    gw = assess("Gateway", "caching-gateway-stale")
    assert not gw.ready and gw.summary == "waiting for the gateway controller"
    # the same objects once the controller caught up
    live = obj("Gateway", "caching-gateway-stale")
    for c in live["status"]["conditions"]:
        c["observedGeneration"] = 2
    assert readiness.assess(live, live).ready


def test_pending_for_lack_of_tpu_names_the_resource_and_waits():
    state = assess("Deployment", "caching-qwen2-5-3b-instruct-decode")
    assert not state.ready and not state.fatal
    assert state.summary == "1/3 ready"
    assert "cannot be scheduled" in state.reason and "Insufficient google.com/tpu" in state.reason
    assert "google.com/tpu: 4" in state.reason and "invoke doctor" in state.reason


def test_autoscaler_refusing_to_scale_up_is_fatal():
    refusal = {**copy.deepcopy(EVENTS[0]), "reason": "NotTriggerScaleUp",
               "message": "pod didn't trigger scale-up: 2 node(s) didn't match Pod's node affinity/selector"}
    refusal["metadata"] = {**refusal["metadata"], "uid": "uid-scale"}
    state = assess("Deployment", "caching-qwen2-5-3b-instruct-decode", events=[*EVENTS, refusal])
    assert state.fatal and "autoscaler will not add a node" in state.reason


def test_image_that_does_not_exist_is_fatal_and_named():
    state = assess("Deployment", "baseline-phi-3-mini-4k-instruct-decode")
    assert state.fatal
    assert "cannot pull image docker.io/vllm/vllm-openai:v0.99.0" in state.reason and "not found" in state.reason


def test_transient_pull_backoff_waits():
    pods = copy.deepcopy(PODS)
    pod = next(p for p in pods if meta(p)["name"].startswith("baseline-phi-3"))
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = \
        'Back-off pulling image "x": toomanyrequests: You have reached your pull rate limit'
    state = assess("Deployment", "baseline-phi-3-mini-4k-instruct-decode", pods=pods)
    assert not state.ready and not state.fatal and "pull rate limit" in state.reason


def test_crash_loop_shows_restarts_exit_code_and_log_tail():
    pods = [p for p in PODS if meta(p)["name"].startswith("baseline-smollm2")]
    assert readiness.logs_wanted(pods) == [(meta(pods[0])["name"], "vllm")]
    logs = {(meta(pods[0])["name"], "vllm"): CRASH_LOG}
    state = assess("Deployment", "baseline-smollm2-360m-instruct-decode", logs=logs)
    assert state.fatal
    assert "crash-looping (4 restarts; last exit code 1 (Error))" in state.reason
    assert "Insufficient memory for KV cache" in state.reason
    assert "vLLM API server version" not in state.reason   # only the last lines


@pytest.mark.parametrize("restarts,fatal", [(2, False), (3, True)])
def test_crash_loop_turns_fatal_at_the_threshold_restart(restarts, fatal):
    """Mutant M1 (`restarts >= CRASH_LOOP_FATAL_RESTARTS` -> `>`): the third restart already fails the deploy."""
    assert readiness.CRASH_LOOP_FATAL_RESTARTS == 3
    pods = copy.deepcopy(PODS)
    pod = next(p for p in pods if meta(p)["name"].startswith("baseline-smollm2"))
    pod["status"]["containerStatuses"][0]["restartCount"] = restarts
    state = assess("Deployment", "baseline-smollm2-360m-instruct-decode", pods=pods)
    assert not state.ready and state.fatal is fatal
    assert f"crash-looping ({restarts} restarts;" in state.reason


def test_rollout_with_an_old_pod_still_counted_is_not_done():
    """Mutant M2 (drop `status.replicas == want`): 3 updated, ready and available pods, but the old
    ReplicaSet's pod is still counted in status.replicas: `kubectl rollout status` says "1 old
    replicas are pending termination", and so do we (not ready) until it is gone."""
    live = obj("Deployment", "caching-qwen2-5-3b-instruct-decode")
    assert live["spec"]["replicas"] == 3
    live["status"].update(replicas=4, updatedReplicas=3, readyReplicas=3, availableReplicas=3, unavailableReplicas=1)
    assert validate_objects([live]) == []
    rolling = readiness.assess(live, live, [], [])
    assert not rolling.ready and rolling.summary == "3/3 ready"
    live["status"].update(replicas=3, unavailableReplicas=0)
    assert readiness.assess(live, live, [], []).ready


def test_missing_secret_is_fatal():
    state = assess("Deployment", "baseline-qwen2-5-0-5b-instruct-decode")
    assert state.fatal and 'CreateContainerConfigError: secret "lightrail-hf-token" not found' in state.reason


def test_progress_deadline_explained_by_the_failing_probe():
    state = assess("Deployment", "caching-llama-3-1-8b-instruct-decode")
    assert state.fatal
    assert "running but not ready" in state.reason and "Readiness probe failed" in state.reason


def test_deployment_without_pods_reports_the_workload_warning():
    live = obj("Deployment", "baseline-qwen2-5-3b-instruct-decode")
    live["status"] = {"observedGeneration": 1, "replicas": 0}
    quota = {"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedCreate",
             "message": 'pods "x" is forbidden: exceeded quota: gpu-quota',
             "metadata": {"name": "e", "uid": "q"},
             "involvedObject": {"kind": "ReplicaSet", "name": "baseline-qwen2-5-3b-instruct-decode-6d9f7c5b8d"}}
    state = readiness.assess(live, live, [], [quota])
    assert (state.ready, state.summary, state.reason, state.fatal) == (   # the API omits zero counts
        False, "0/1 ready", 'no pods: FailedCreate: pods "x" is forbidden: exceeded quota: gpu-quota', False)
    assert readiness.assess(live, live, [], []).reason == "no pods yet"


def test_gateways():
    assert assess("Gateway", "caching-gateway").ready
    kind = assess("Gateway", "baseline-gateway-kind")
    assert kind.ready and "port-forward" in kind.reason
    noclass = assess("Gateway", "baseline-gateway-noclass")
    assert not noclass.ready and noclass.summary == "not Accepted" and "Waiting for controller" in noclass.reason


def test_routes_and_pools():
    assert assess("HTTPRoute", "baseline-qwen2-5-3b-instruct").ready
    route = assess("HTTPRoute", "caching-qwen2-5-3b-instruct")
    assert not route.ready and route.summary == "not ResolvedRefs by caching-gateway" and "BackendNotFound" in route.reason
    assert assess("InferencePool", "baseline-qwen2-5-3b-instruct").ready
    bare = obj("HTTPRoute", "caching-qwen2-5-3b-instruct")
    del bare["status"]
    assert readiness.assess(bare, bare) == readiness.State(
        "HTTPRoute lightrail/caching-qwen2-5-3b-instruct", False, "not attached", "no gateway has accepted it yet")
    pool = obj("InferencePool", "baseline-qwen2-5-3b-instruct")
    del pool["status"]   # some gateways write no status on pools: that is no reason to wait
    assert readiness.assess(pool, pool) == readiness.State(
        "InferencePool lightrail/baseline-qwen2-5-3b-instruct", True, "exists", "the gateway reports no status for it")


def test_leaderworkerset_and_llminferenceservice():
    assert assess("LeaderWorkerSet", "moe-deepseek-v2-lite-chat") == readiness.State(
        "LeaderWorkerSet lightrail/moe-deepseek-v2-lite-chat", True, "1/1 groups ready")
    assert assess("LLMInferenceService", "baseline-qwen2-5-3b-instruct").ready
    state = assess("LLMInferenceService", "baseline-qwen2-5-0-5b-instruct")
    assert not state.ready and not state.fatal
    assert "WorkloadsReady: Deployment does not have minimum availability" in state.reason
    assert "Insufficient cpu" in state.reason


def test_a_ready_llminferenceservice_with_a_replica_short_is_not_ready_yet():
    """KServe says Ready once its Deployment is Available, with one of two replicas (seen in e2e);
    a deploy waits for every replica and says why the last one is not serving."""
    live = obj("LLMInferenceService", "baseline-qwen2-5-0-5b-instruct")
    live["spec"]["replicas"] = 2
    live["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    pods = copy.deepcopy(PODS)
    state = readiness.assess(live, live, pods, EVENTS)
    assert (state.ready, state.summary, state.fatal) == (False, "Ready, 1/2 replicas ready", False)
    assert state.reason.startswith("pod baseline-qwen2-5-0-5b-instruct-kserve-7f8c9d-bbbbb cannot be scheduled")
    pending = next(p for p in pods if meta(p)["name"].endswith("bbbbb"))
    pending["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert readiness.assess(live, live, pods, EVENTS).ready
    pending["metadata"]["deletionTimestamp"] = "2026-11-20T10:00:00Z"    # a terminating pod serves no more
    assert not readiness.assess(live, live, pods, EVENTS).ready


def test_missing_and_plain_objects():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "lightrail"}}
    assert readiness.assess(cm, None) == readiness.State("ConfigMap lightrail/c", False, "not created yet")
    assert readiness.assess(cm, cm).ready


def test_leaderworkerset_status_of_an_older_generation_is_not_trusted():
    live = obj("LeaderWorkerSet", "moe-deepseek-v2-lite-chat")
    live["metadata"]["generation"] = 2
    assert readiness.assess(live, live) == readiness.State(
        "LeaderWorkerSet lightrail/moe-deepseek-v2-lite-chat", False, "waiting for the controller",
        "status is for an older generation")


def test_the_most_telling_finding_wins_and_deleted_pods_are_ignored():
    crash = next(p for p in PODS if meta(p)["name"].startswith("baseline-smollm2"))
    pull = next(p for p in PODS if meta(p)["name"].startswith("baseline-phi-3"))
    pending = next(p for p in PODS if meta(p)["name"] == "caching-qwen2-5-3b-instruct-decode-6d9f7c5b8d-b2b2b")
    young = copy.deepcopy(crash)
    young["status"]["containerStatuses"][0]["restartCount"] = 1          # not fatal yet
    text, fatal = readiness.explain([pending, young], EVENTS, {}, "x")
    assert text.startswith(f"pod {meta(young)['name']}: container vllm is crash-looping (1 restarts") and not fatal
    text, fatal = readiness.explain([young, pull], EVENTS, {}, "x")    # a fatal finding beats a telling one
    assert text.startswith(f"pod {meta(pull)['name']}: cannot pull image") and fatal
    leaving = copy.deepcopy(pull)
    leaving["metadata"]["deletionTimestamp"] = "2026-11-20T10:30:00Z"   # an old pod on its way out
    assert readiness.explain([leaving, pending], EVENTS, {}, "x")[0].startswith(f"pod {meta(pending)['name']} cannot")
    assert readiness.explain([leaving], EVENTS, {}, "x") == ("", False)


def test_logs_are_wanted_only_for_containers_that_crashed_and_wait_to_restart():
    crash = next(p for p in PODS if meta(p)["name"].startswith("baseline-smollm2"))
    first = copy.deepcopy(crash)
    first["status"]["containerStatuses"][0]["restartCount"] = 0         # no previous run to read
    running = copy.deepcopy(crash)
    running["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-11-20T10:00:00Z"}}
    assert readiness.logs_wanted([first, running]) == []
    assert readiness.logs_wanted([first, crash]) == [(meta(crash)["name"], "vllm")]


def test_changes_are_the_states_not_shown_yet():
    a, b = readiness.State("a", False, "0/1 ready"), readiness.State("b", True, "Ready")
    assert readiness.changes({}, [a, b]) == [a, b]
    assert readiness.changes({"a": a, "b": b}, [a, b]) == []
    later = readiness.State("a", True, "1/1 ready")
    assert readiness.changes({"a": a, "b": b}, [later, b]) == [later]


def test_verdict():
    ok, wait_, bad = (readiness.State("a", True, ""), readiness.State("b", False, ""),
                      readiness.State("c", False, "", fatal=True))
    assert readiness.verdict([ok]) == "ready"
    assert readiness.verdict([ok, wait_]) == "waiting"
    assert readiness.verdict([ok, wait_, bad]) == "failed"


# ---------------------------------------------------------------------------------------------
# The watch loop


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def ticking(events, clock, step=1.0):
    for ev in events:
        clock.now += step
        yield ev
    while True:
        clock.now += step
        yield "TICK", None


def test_follow_prints_each_change_and_returns_when_ready():
    desired = obj("Deployment", "caching-qwen2-5-3b-instruct-decode")
    start = copy.deepcopy(desired)
    done = copy.deepcopy(desired)
    done["status"].update(readyReplicas=3, availableReplicas=3, unavailableReplicas=0)
    lines, clock = [], Clock()
    events = [("TICK", None), ("ADDED", start), *[("ADDED", p) for p in PODS], ("MODIFIED", done)]
    states = wait.follow([desired], ticking(events, clock), timeout=60, out=lines.append, clock=clock)
    assert [s.ready for s in states] == [True]
    assert any("waiting Deployment lightrail/caching-qwen2-5-3b-instruct-decode: not created yet" in l for l in lines)
    assert any("1/3 ready — pod caching" in l and "Insufficient google.com/tpu" in l for l in lines)
    assert lines[-1].endswith("ready   Deployment lightrail/caching-qwen2-5-3b-instruct-decode: 3/3 ready")


def test_follow_times_out_naming_what_is_not_ready():
    desired = obj("Deployment", "caching-qwen2-5-3b-instruct-decode")
    clock = Clock()
    with pytest.raises(wait.NotReady) as err:
        wait.follow([desired], ticking([("ADDED", desired), *[("ADDED", p) for p in PODS]], clock), timeout=30,
                    out=lambda _: None, clock=clock)
    text = str(err.value)
    assert "timed out after 30 s" in text and "caching-qwen2-5-3b-instruct-decode: 1/3 ready" in text
    assert "Insufficient google.com/tpu" in text


def test_follow_fails_fast_and_fetches_crash_logs_once_per_restart():
    desired = obj("Deployment", "baseline-smollm2-360m-instruct-decode")
    pod = next(p for p in PODS if meta(p)["name"].startswith("baseline-smollm2"))
    fetched = []

    def logs_for(ns, name, container):
        fetched.append((ns, name, container))
        return CRASH_LOG

    early = copy.deepcopy(pod)
    early["status"]["containerStatuses"][0]["restartCount"] = 1
    clock = Clock()
    with pytest.raises(wait.NotReady) as err:
        wait.follow([desired], ticking([("ADDED", desired), ("ADDED", early), ("MODIFIED", early), ("MODIFIED", pod)],
                                       clock), timeout=600, out=lambda _: None, logs_for=logs_for, clock=clock)
    assert "(failed)" in str(err.value) and "Insufficient memory for KV cache" in str(err.value)
    assert fetched == [("lightrail", meta(pod)["name"], "vllm")] * 2   # restart 1, then restart 4
    assert clock.now < 10   # did not wait for the timeout


def test_follow_judges_a_workload_by_the_pods_of_its_own_namespace():
    """Mutant M12 (wait selects pods from all namespaces): the same pattern deployed by another team
    in namespace team-b has pods with the same labels; its crash loop is not ours and must neither
    explain nor fail our rollout."""
    desired = obj("Deployment", "caching-qwen2-5-3b-instruct-decode")
    ours = [p for p in PODS if meta(p)["name"].startswith("caching-qwen2-5-3b-instruct-decode")]
    crash = next(p for p in PODS if meta(p)["name"].startswith("baseline-smollm2"))
    theirs = copy.deepcopy(crash)
    theirs["metadata"].update(namespace="team-b", labels=copy.deepcopy(ours[0]["metadata"]["labels"]))
    clock = Clock()
    with pytest.raises(wait.NotReady) as err:
        wait.follow([desired], ticking([("ADDED", desired), ("ADDED", theirs), *[("ADDED", p) for p in ours]], clock),
                    timeout=30, out=lambda _: None, clock=clock)
    text = str(err.value)
    assert "timed out after 30 s" in text and "Insufficient google.com/tpu" in text
    assert "crash-looping" not in text and "(failed)" not in text


def test_follow_forgets_deleted_objects():
    desired = obj("Deployment", "caching-qwen2-5-3b-instruct-decode")
    clock = Clock()
    with pytest.raises(wait.NotReady) as err:
        wait.follow([desired], ticking([("ADDED", desired), ("DELETED", desired)], clock, step=10), timeout=15,
                    out=lambda _: None, clock=clock)
    assert "not created yet" in str(err.value)


def test_watch_specs_cover_kinds_pods_and_events_per_namespace():
    desired = [obj("Deployment", "baseline-qwen2-5-3b-instruct-decode"), obj("Gateway", "kserve-ingress-gateway")]
    assert wait.watch_specs(desired) == [
        ("apps/v1", "Deployment", "lightrail"), ("gateway.networking.k8s.io/v1", "Gateway", "kserve"),
        ("v1", "Pod", "lightrail"), ("v1", "Event", "lightrail"), ("v1", "Pod", "kserve"), ("v1", "Event", "kserve")]
