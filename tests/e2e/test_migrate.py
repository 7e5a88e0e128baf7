"""`invoke migrate` on the real control plane, under traffic.

The real API server, scheduler and kwok nodes, the real istiod (it accepts the routes and pools)
and the real KServe controller (it reconciles the LLMInferenceService the migration deploys). No
gateway data plane runs here, so the gateway model (lightrail/testing/gateway.py) serves the
Gateway: it watches the real routes, pools and pods and forwards to two real vLLM processes
standing in for the two stacks' pools. The traffic driver sends requests through it the whole time.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from lightrail.migrate.gatewaymetrics import shadow_service
from lightrail.migrate.routes import PROBE_HEADER, client_weights
from lightrail.plan import Request, build_plan
from lightrail.smoke import metrics
from lightrail.smoke.discovery import as_deployed
from lightrail.settings import ROOT
from lightrail.testing.gateway import GatewayModel
from lightrail.testing.traffic import TrafficDriver
from tests.conftest import PHI, QWEN
from tests.e2e.conftest import PLANTED, apply_nodes, invoke
from tests.e2e.test_deploy import gateway, kserve  # noqa: F401  (module fixtures: istiod, KServe)
from tests.test_migrate_preflight import istiod

pytestmark = pytest.mark.vllm
NAME = "caching-qwen2-5-3b-instruct"
POOLS = {"llmd": NAME, "kserve": f"{NAME}-inference-pool"}
# Short holds; a drain longer than a streamed request takes on a loaded machine (12 s seen); latency is
# guarded by tests/test_migrate_plan.py, not here, where two CPU vLLMs share two busy cores.
FAST = ("--steps=10,50,100", "--hold=3", "--settle=2", "--drain=15", "--timeout=300", "--latency-margin=60", "--yes")


@pytest.fixture(scope="module")
def upstreams(vllm_pair):
    """The two real vLLMs: one stands in for each stack's pool."""
    return {"llmd": vllm_pair[0], "kserve": vllm_pair[1]}


class Weights(threading.Thread):
    """The front route's weights over time, read from the API server (what the gateway is told)."""

    def __init__(self, cluster, namespace: str):
        super().__init__(daemon=True)
        self.cluster, self.ns, self.seen, self.done = cluster, namespace, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            out = self.cluster.kubectl("get", "httproute", f"{NAME}-front", "-n", self.ns, "-o", "json",
                                       check=False).stdout
            if out.strip():
                weights = client_weights(json.loads(out))
                share = {pool: w / sum(weights.values()) for pool, w in weights.items()}
                if not self.seen or self.seen[-1][1] != share:
                    self.seen.append((time.monotonic(), share))
            time.sleep(0.3)

    def timeline(self, pool: str) -> list[tuple[float, float]]:
        return [(t, share.get(pool, 0.0)) for t, share in self.seen]


def objects(cluster, namespace: str, kinds: str) -> dict[str, dict]:
    """Objects by kind/name with the fields a rollback must restore (spec, labels), server fields left out."""
    items = json.loads(cluster.kubectl("get", kinds, "-n", namespace, "-o", "json").stdout)["items"]
    return {f"{o['kind']}/{o['metadata']['name']}": {"spec": o.get("spec"), "labels": o["metadata"].get("labels"),
                                                     "uid": o["metadata"]["uid"]}
            for o in items if not o["metadata"].get("ownerReferences")}


def migrate(cluster, *args, ok=True):
    return invoke(cluster, "migrate", "--pattern=caching", *args, ok=ok, timeout=900)


@contextlib.contextmanager
def serving(cluster, ns: str, upstreams: dict, pattern: str = "caching", *plan: str, counters: str = "istio"):
    """The pattern on llmd, its Gateway served by the gateway model with one vLLM per stack's pool (its
    proxy keeping the request counter of `counters`)."""
    invoke(cluster, "deploy", f"--pattern={pattern}", *(plan or ("--accel=sim",)), f"--namespace={ns}", "--timeout=300")
    name = f"{pattern}-qwen2-5-3b-instruct"
    backends = {(ns, name): upstreams["llmd"], (ns, f"{name}-inference-pool"): upstreams["kserve"]}
    try:
        with GatewayModel(cluster.kubeconfig, cluster.context, (ns, f"{pattern}-gateway"), backends,
                          propagation_delay=1.0, seed=7, counters=counters) as gw:
            yield gw
    finally:
        invoke(cluster, "teardown", f"--pattern={pattern}", f"--namespace={ns}", ok=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.fixture
def deployed(kserve, upstreams, request):   # noqa: F811
    """caching on llmd (sim) behind the gateway model (counting as Istio, or as the indirect parameter
    names)."""
    ns = "mig-" + request.node.name.removeprefix("test_")[:20].replace("_", "-").rstrip("-")
    with serving(kserve, ns, upstreams, counters=getattr(request, "param", "istio")) as gw:
        yield kserve, ns, gw


def test_llmd_to_kserve_and_back_under_traffic_fails_no_request(deployed, upstreams, tmp_path):
    cluster, ns, gw = deployed
    gateway_before = objects(cluster, ns, "gateways.gateway.networking.k8s.io")
    # the way back warms the llmd target with a prefix clients share (--warm-prompts), one nobody sent before
    shared = f"Policy {uuid.uuid4().hex}: " + "Answer in one line, cite the runbook, never guess. " * 30
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": shared}) + "\n")
    weights = Weights(cluster, ns)
    weights.start()
    with TrafficDriver(gw.url, QWEN, rate=8, concurrency=8, max_tokens=4) as traffic:
        there = migrate(cluster, "--accel=sim", "--to=kserve", f"-n={ns}", f"--url={gw.url}",
                        f"--metrics-url={gw.metrics_url}", *FAST)
        there_timeline = weights.timeline(POOLS["kserve"])
        back = migrate(cluster, "--accel=sim", "--to=llmd", f"-n={ns}", f"--url={gw.url}",
                       f"--warm-prompts={tmp_path / 'prompts.jsonl'}", *FAST)
        time.sleep(2)
    weights.done.set()
    assert "- warm the target's prefix cache (8 request(s) per model through its probe rule)" in there.stdout
    assert "- warm the target's prefix cache (1 request(s) per model through its probe rule, the prompts of " \
           "--warm-prompts)" in back.stdout and shared not in back.stdout + back.stderr
    # the llmd target's vLLM holds that prefix: a client request with it hits its prefix cache (blocks of 128)
    before = metrics.scrape([f"{upstreams['llmd']}/metrics"])
    asked = httpx.post(f"{upstreams['llmd']}/v1/completions", json={"model": QWEN, "prompt": f"{shared}\nQ: which?",
                                                                      "max_tokens": 1}, timeout=60)
    assert asked.status_code == 200, asked.text
    hits = metrics.delta(before, metrics.scrape([f"{upstreams['llmd']}/metrics"]))[metrics.PREFIX_HITS]
    assert hits >= 128, f"{hits} prompt tokens of the warmed prefix came from the cache"
    report = traffic.report()
    out = there.stdout + back.stdout
    assert report.failures == [], report.summary() + "\n" + out[-3000:]
    assert "migrated: caching now runs on kserve" in there.stdout and "migrated: caching now runs on llmd" in back.stdout
    # each hold showed the client requests the gateway counted per side (the pools' shadow Services are
    # named as the real istiod names them): at 50 % both sides served, at 100 % the source no more
    holds = dict(re.findall(r"target (\d+)%, .*clients: (source \d+ \(0 5xx\), target \d+ \(0 5xx\))", there.stdout))
    assert holds.keys() == {"10", "50", "100"}, there.stdout
    source, target = map(int, re.findall(r"\d+(?= \()", holds["50"]))
    assert source > 0 and target > 0, holds
    assert cluster.kubectl("get", "service", shadow_service(POOLS["llmd"]), "-n", ns, check=False).returncode == 0
    served = {r.backend for r in report.records}
    assert served == {f"{ns}/{POOLS['llmd']}", f"{ns}/{POOLS['kserve']}"}, served
    # the target's share followed the weights the migration set (10, 50, 100 %)
    assert [round(s, 2) for _, s in there_timeline] == [0.0, 0.1, 0.5, 1.0], there_timeline
    whole = weights.timeline(POOLS["kserve"])   # there and back: 0 -> 10 -> 50 -> 100 -> 90 -> 50 -> 0 %
    assert [round(s, 2) for _, s in whole] == [0.0, 0.1, 0.5, 1.0, 0.9, 0.5, 0.0], whole
    assert report.share_problems(whole, f"{ns}/{POOLS['kserve']}", tolerance=0.25, settle=2.0) == [], \
        report.summary()
    # one Gateway the whole time: the same object, never replaced
    assert objects(cluster, ns, "gateways.gateway.networking.k8s.io").keys() == gateway_before.keys()
    assert [g["uid"] for g in objects(cluster, ns, "gateways.gateway.networking.k8s.io").values()] == \
        [g["uid"] for g in gateway_before.values()]
    # a normal llmd deployment again: status, no migration state, no kserve objects, the token never shown
    (row,) = json.loads(invoke(cluster, "status", f"--namespace={ns}", "--output=json").stdout)
    assert (row["stack"], row["ready"], row["desired"]) == ("llmd", 3, 3), row
    assert cluster.kubectl("get", "configmap", "caching-migration", "-n", ns, check=False).returncode != 0
    assert not json.loads(cluster.kubectl("get", "llminferenceservices", "-n", ns, "-o", "json").stdout)["items"]
    assert PLANTED not in cluster.kubectl("get", "configmaps,httproutes", "-n", ns, "-o", "yaml").stdout


@contextlib.contextmanager
def failing_clients(upstream: str):
    """A target that still answers the migration's probes (they carry its probe header) and answers
    every client request 500: only the gateway's counters can see it."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.headers.get(PROBE_HEADER) is None:
                self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            answer = httpx.post(upstream + self.path, content=body, headers={"content-type": "application/json"},
                                timeout=60)
            self.send_response(answer.status_code)
            self.send_header("content-type", answer.headers.get("content-type", "application/json"))
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.mark.parametrize("deployed", ["agentgateway"], indirect=True)
def test_a_tripped_guard_restores_the_last_good_weights_and_rollback_restores_the_source(deployed, upstreams):
    """At 50 % the target starts failing its clients while its probes still pass: the gateway's counters
    (--metrics-url; agentgateway's here, Istio's in the test above) trip the guard, which puts the
    weights back at 10 % and stops; --rollback then returns to the source exactly (objects compared
    field by field)."""
    cluster, ns, gw = deployed
    kinds = "deployments,inferencepools,httproutes,gateways.gateway.networking.k8s.io,services"
    before = objects(cluster, ns, kinds)
    with failing_clients(upstreams["kserve"]) as broken, \
            TrafficDriver(gw.url, QWEN, rate=8, concurrency=8, max_tokens=4) as traffic:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "migrate", "--pattern=caching", "--accel=sim",
                                 "--to=kserve", f"-n={ns}", f"--url={gw.url}", f"--metrics-url={gw.metrics_url}",
                                 "--steps=10,50,100", "--hold=10", "--settle=2", "--drain=2", "--timeout=300",
                                 "--latency-margin=60", "--yes"], cwd=ROOT, env={**cluster.env, "HF_TOKEN": PLANTED},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "hold 50%" in line:
                gw.backends[(ns, POOLS["kserve"])] = broken   # the target starts failing clients
                break
        seen += proc.stdout.readlines()
    out = "".join(seen)
    assert proc.wait(120) == 1, out
    assert "guard tripped at shift-50" in out and "client request(s) to the target with 5xx" in out, out
    assert "clients: source " in out, out        # the 10 % hold showed what each side served
    report = traffic.report()
    assert {r.backend for r in report.failures} == {f"{ns}/{POOLS['kserve']}"}, report.summary() + "\n" + out
    route = json.loads(cluster.kubectl("get", "httproute", f"{NAME}-front", "-n", ns, "-o", "json").stdout)
    assert client_weights(route) == {POOLS["llmd"]: 90, POOLS["kserve"]: 10}, f"not the last good weights:\n{out}"
    state = json.loads(json.loads(cluster.kubectl("get", "configmap", "caching-migration", "-n", ns, "-o", "json")
                                  .stdout)["data"]["state.json"])
    assert (state["status"], state["phase"], state["weight"]) == ("paused", "shift-50", 10), state

    status = invoke(cluster, "status", f"--namespace={ns}").stdout
    assert "migrat" in status, status
    back = migrate(cluster, "--rollback", f"-n={ns}", f"--url={gw.url}", "--yes")
    assert "rolled back" in back.stdout, back.stdout
    after = objects(cluster, ns, kinds)
    assert after.keys() == before.keys(), (sorted(set(after) ^ set(before)))
    for name, obj in before.items():
        assert after[name]["spec"] == obj["spec"] and after[name]["labels"] == obj["labels"], name
    assert cluster.kubectl("get", "configmap", "caching-migration", "-n", ns, check=False).returncode != 0


def test_kill_9_mid_migration_then_resume_completes_it(deployed):
    cluster, ns, gw = deployed
    with TrafficDriver(gw.url, QWEN, rate=6, concurrency=6, max_tokens=4) as traffic:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "migrate", "--pattern=caching", "--accel=sim",
                                 "--to=kserve", f"-n={ns}", f"--url={gw.url}", *FAST],
                                cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        for line in proc.stdout:
            if "hold 10%" in line:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        resumed = migrate(cluster, "--resume", f"-n={ns}", f"--url={gw.url}", "--yes")
        time.sleep(2)
    report = traffic.report()
    assert "resuming" in resumed.stdout and "migrated: caching now runs on kserve" in resumed.stdout, resumed.stdout
    assert report.failures == [], report.summary()
    (row,) = json.loads(invoke(cluster, "status", f"--namespace={ns}", "--output=json").stdout)
    assert (row["stack"], row["ready"]) == ("kserve", 3), row


def test_a_gpu_baseline_behind_https_moves_onto_its_node_shape_probed_with_ca_file(kserve, upstreams,  # noqa: F811
                                                                                  tmp_path):
    """The Gateway answers over HTTPS with a certificate from a private CA: without --ca-file the
    migration is refused before anything changes, naming the flag; with it, it completes under traffic,
    and the real scheduler puts the target's pods on the source's accelerator node shape (H100s)."""
    from lightrail.ops.controllers import serving_cert
    from lightrail.testing.tlsfront import TlsFront

    cluster, ns = kserve, "mig-https-gpu"
    apply_nodes(cluster, "gpu:h100:2")
    accel = ("--accel=gpu", "--gpu-type=h100")
    serving_cert(tmp_path / "gw")
    kinds = "deployments,inferencepools,httproutes,configmaps"
    with serving(cluster, ns, upstreams, "baseline", *accel) as gw, TlsFront(gw.url, tmp_path / "gw") as front:
        args = ("migrate", "--pattern=baseline", *accel, "--to=kserve", f"-n={ns}", f"--url={front.url}", *FAST)
        before = objects(cluster, ns, kinds)
        refused = invoke(cluster, *args, ok=False)
        assert refused.returncode == 1 and "its TLS certificate is not trusted (self-signed certificate): give the " \
            "CA that signed it with --ca-file; nothing was changed" in refused.stderr, refused.stderr
        assert objects(cluster, ns, kinds) == before
        with TrafficDriver(gw.url, QWEN, rate=5, concurrency=5, max_tokens=4) as traffic:
            done = invoke(cluster, *args, f"--ca-file={tmp_path / 'gw' / 'tls.crt'}", timeout=900)
            time.sleep(2)
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", "kserve.io/component=workload", "-o",
                                          "json").stdout)["items"]
    assert "migrated: baseline now runs on kserve" in done.stdout, done.stdout[-3000:]
    report = traffic.report()
    assert report.failures == [], report.summary() + done.stdout[-2000:]
    assert pods and all(p["spec"]["nodeName"].startswith("kwok-gpu-h100-") for p in pods), \
        [p["spec"].get("nodeName") for p in pods]


def test_a_dry_run_checks_the_cluster_once_shows_every_phase_and_changes_nothing(deployed, monkeypatch, capsys):
    """The real invoke program in this process (so doctor's runs can be counted, the real doctor each
    time): the preflight checks the target's cluster needs, and the dry run of the target's deploy does
    not check them again - nor does the real run, which deploys through the same call."""
    import tasks
    from invoke import Program
    from lightrail.ops import flows

    cluster, ns, gw = deployed
    stacks, doctor = [], flows.doctor
    monkeypatch.setattr(flows, "doctor", lambda target, cluster, stack, *rest, **kw:
                        stacks.append(stack) or doctor(target, cluster, stack, *rest, **kw))
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    kinds = "deployments,inferencepools,httproutes,configmaps,llminferenceservices"
    before = objects(cluster, ns, kinds)
    Program(namespace=tasks.ns, binary="invoke").run(
        ["invoke", "migrate", "--pattern=caching", "--accel=sim", "--to=kserve", f"-n={ns}", f"--url={gw.url}", *FAST,
         "--dry-run"], exit=False)
    out = capsys.readouterr().out
    assert stacks == ["kserve"], out
    phases = re.findall(r"^== phase \d+/\d+ (\S+) ==$", out, re.MULTILINE)
    assert phases[0] == "front" and {"verify-target", "shift-50", "drain", "remove-source"} <= set(phases), phases
    assert "deploy the target (kserve)" in out and "a real deploy would stop here" not in out, out
    assert out.rstrip().endswith("nothing was changed") and PLANTED not in out, out[-2000:]
    assert objects(cluster, ns, kinds) == before


def test_preflight_refuses_a_gateway_that_cannot_split_and_changes_nothing(deployed):
    cluster, ns, gw = deployed
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "kgw-test"},
        "spec": {"controllerName": "kgateway.dev/kgateway"}}))
    cluster.kubectl("patch", "gateway", "caching-gateway", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"gatewayClassName": "kgw-test"}}))
    before = objects(cluster, ns, "deployments,inferencepools,httproutes,configmaps")
    proc = migrate(cluster, "--accel=sim", "--to=kserve", f"-n={ns}", f"--url={gw.url}", "--yes", ok=False)
    assert proc.returncode == 1 and "kgateway#11667" in proc.stderr and "nothing was changed" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert objects(cluster, ns, "deployments,inferencepools,httproutes,configmaps") == before
    # back on istio, but its istiod (Istio's own chart, as `invoke prereqs --istio` installed it before 1.29.9)
    # predates the fix for one empty pool answering a weighted rule 503
    cluster.kubectl("patch", "gateway", "caching-gateway", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"gatewayClassName": "istio"}}))
    old = istiod("1.29.2")
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "istio-system"}}))
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(old))
    try:
        proc = migrate(cluster, "--accel=sim", "--to=kserve", f"-n={ns}", f"--url={gw.url}", "--yes", ok=False)
    finally:
        cluster.kubectl("delete", "deployment", "istiod", "-n", "istio-system", "--wait=false")
    assert proc.returncode == 1 and "istiod 1.29.2 (istio-system/istiod) lacks the fix for istio#61594" in proc.stderr, \
        proc.stderr
    assert "kgateway" not in proc.stderr and "nothing was changed" in proc.stderr, proc.stderr
    assert objects(cluster, ns, "deployments,inferencepools,httproutes,configmaps") == before


def test_no_capacity_for_the_target_beside_the_source_is_refused_naming_surge(kserve, upstreams):  # noqa: F811
    cluster = kserve
    apply_nodes(cluster, "gpu:t4:1")
    ns = "mig-no-capacity"
    with serving(cluster, ns, upstreams, "baseline", "--accel=gpu", "--gpu-type=t4") as gw:
        proc = invoke(cluster, "migrate", "--pattern=baseline", "--accel=gpu", "--gpu-type=t4", "--to=kserve", f"-n={ns}",
                      f"--url={gw.url}", "--timeout=60", "--yes", ok=False)
    assert proc.returncode == 1 and "capacity" in proc.stderr and "surge" in proc.stderr, proc.stderr
    assert "nothing was changed" in proc.stderr


def test_no_surge_swaps_one_replica_at_a_time_on_a_full_cluster(kserve, upstreams):  # noqa: F811
    """Three TPU nodes of one chip each hold the source's three replicas and nothing else: a surge
    migration is refused naming --no-surge; with it, each source pod leaves its pool, drains and
    goes, and a target replica takes its node - under traffic, with no failed request, the weights
    following the swapped replicas (33, 67, 100 %)."""
    cluster = kserve
    apply_nodes(cluster, "tpu:v6e-1x1:3")
    ns = "mig-no-surge"
    accel = ("--accel=tpu", "--topology=1x1")
    slow = tuple(a for a in FAST if not a.startswith("--steps"))
    with serving(cluster, ns, upstreams, "caching", *accel) as gw:
        refused = invoke(cluster, "migrate", "--pattern=caching", *accel, "--to=kserve", f"-n={ns}", f"--url={gw.url}",
                         *slow, ok=False)
        assert refused.returncode == 1 and "no capacity beside the source" in refused.stderr \
            and "--no-surge" in refused.stderr and "nothing was changed" in refused.stderr, refused.stderr
        weights = Weights(cluster, ns)
        weights.start()
        with TrafficDriver(gw.url, QWEN, rate=6, concurrency=6, max_tokens=4) as traffic:
            moved = invoke(cluster, "migrate", "--pattern=caching", *accel, "--to=kserve", f"-n={ns}",
                           f"--url={gw.url}", "--no-surge", *slow, timeout=900)
            time.sleep(2)
        weights.done.set()
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    report = traffic.report()
    assert report.failures == [], report.summary() + moved.stdout[-3000:]
    assert "migrated: caching now runs on kserve" in moved.stdout, moved.stdout[-3000:]
    assert [round(s, 2) for _, s in weights.timeline(POOLS["kserve"])] == [0.0, 0.33, 0.67, 1.0], weights.seen
    assert {r.backend for r in report.records} == {f"{ns}/{POOLS['llmd']}", f"{ns}/{POOLS['kserve']}"}
    assert moved.stdout.count("leaves pool") == 2, moved.stdout   # the third goes with the source, after the drain
    workload = [p for p in pods if p["metadata"].get("labels", {}).get("kserve.io/component") == "workload"]
    assert sorted(p["spec"].get("nodeName", "") for p in workload) == [f"kwok-tpu-v6e-1x1-{i}" for i in range(3)], \
        [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods]


def test_moe_moves_whole_leaderworkerset_groups_there_and_back_under_traffic(kserve, upstreams, tmp_path):  # noqa: F811
    """moe on H100s (one LeaderWorkerSet group: a leader and a worker pod of 4 GPUs each), served as the
    tiny model: llmd -> kserve -> llmd under traffic with 0 failed requests. The real LWS controller
    makes the llmd chart's groups and the one KServe makes of the LLMInferenceService; each way the
    source's LeaderWorkerSet is gone at the end and the target's pods run on the H100 nodes. KServe's
    data-parallel pods need Pod Security 'privileged' and the llmd deployment's namespace enforces
    'restricted': the preflight refuses, changing nothing, until the namespace is labelled so."""
    import yaml

    from lightrail.ops import controllers
    from tests.e2e.test_pod_security import need_controller, upstream_crds

    need_controller("lws")
    cluster, ns = kserve, "mig-moe"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(upstream_crds("lws")))
    apply_nodes(cluster, "gpu:h100:4")
    plan = ("--accel=gpu", "--gpu-type=h100", f"--model={QWEN}")
    fast = (*(a for a in FAST if not a.startswith("--timeout")), "--timeout=600")
    pool = "moe-qwen2-5-3b-instruct"

    def groups() -> dict[str, list[str]]:
        """LeaderWorkerSets by owner kind (the chart's have none), with their pods' nodes."""
        sets = json.loads(cluster.kubectl("get", "leaderworkersets", "-n", ns, "-o", "json").stdout)["items"]
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        return {(s["metadata"].get("ownerReferences") or [{"kind": "chart"}])[0]["kind"]:
                sorted(p["spec"].get("nodeName", "") for p in pods
                       if p["metadata"].get("labels", {}).get("leaderworkerset.sigs.k8s.io/name") == s["metadata"]["name"])
                for s in sets}

    with controllers.running("lws", cluster.kubeconfig, tmp_path / "lws"), \
            serving(cluster, ns, upstreams, "moe", *plan) as gw:
        before = groups()
        args = ("migrate", "--pattern=moe", *plan, f"-n={ns}", f"--url={gw.url}", *fast)
        kinds = "deployments,inferencepools,httproutes,configmaps,leaderworkersets"
        unchanged = objects(cluster, ns, kinds)
        refused = invoke(cluster, *args, "--to=kserve", ok=False)
        assert refused.returncode == 1 and f"target (kserve): namespace {ns} enforces Pod Security 'restricted'; " \
            "this deployment's pods need 'privileged'" in refused.stderr and "nothing was changed" in refused.stderr \
            and f"kubectl label namespace {ns} pod-security.kubernetes.io/enforce=privileged --overwrite" \
            in refused.stderr, refused.stderr
        assert objects(cluster, ns, kinds) == unchanged
        cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged", "--overwrite")
        with TrafficDriver(gw.url, QWEN, rate=6, concurrency=6, max_tokens=4) as traffic:
            there = invoke(cluster, *args, "--to=kserve", timeout=1200)
            on_kserve = groups()
            back = invoke(cluster, *args, "--to=llmd", timeout=1200)
            time.sleep(2)
        after = groups()
    report = traffic.report()
    assert report.failures == [], report.summary() + "\n" + (there.stdout + back.stdout)[-3000:]
    assert "migrated: moe now runs on kserve" in there.stdout and "migrated: moe now runs on llmd" in back.stdout
    assert {r.backend for r in report.records} == {f"{ns}/{pool}", f"{ns}/{pool}-inference-pool"}, report.summary()
    for seen in (before, on_kserve, after):
        assert len(seen) == 1 and all(len(nodes) == 2 and all(n.startswith("kwok-gpu-h100-") for n in nodes)
                                      for nodes in seen.values()), (before, on_kserve, after)
    assert before.keys() == after.keys() == {"chart"} and on_kserve.keys() == {"LLMInferenceService"}, \
        (before, on_kserve, after)


@pytest.fixture(scope="module")
def phi(tiny_model):
    """A real vLLM answering as multimodel's second model: it stands in for both stacks' pools of it."""
    from lightrail.testing.vllm import VLLMServer

    with VLLMServer(tiny_model, PHI, startup_timeout=600) as server:
        yield server.url


def test_multimodel_moves_each_models_route_and_the_body_router_goes_with_the_gateway(kserve, upstreams, phi,  # noqa: F811
                                                                                      monkeypatch):
    """Both models under traffic, llmd -> kserve: clients keep their model names on the same Gateway;
    the gateway model routes by the body only while the llmd body-based router's Service exists, so
    removing it with the source would fail every request. (kserve -> llmd for multimodel: the next test;
    back onto the llmd Gateway: tests/test_migrate_plan.py.)"""
    cluster, ns = kserve, "mig-multimodel"
    qwen, phi_name = "multimodel-qwen2-5-3b-instruct", "multimodel-phi-3-mini-4k-instruct"
    backends = {(ns, qwen): upstreams["llmd"], (ns, f"{qwen}-inference-pool"): upstreams["kserve"],
                (ns, phi_name): phi, (ns, f"{phi_name}-inference-pool"): phi}
    steps = ("--steps=50,100", *FAST[1:])
    invoke(cluster, "deploy", "--pattern=multimodel", "--accel=sim", f"--namespace={ns}", "--timeout=300")
    try:
        bbr = json.loads(cluster.kubectl("get", "service", "multimodel-bbr", "-n", ns, "-o", "json").stdout)
        with GatewayModel(cluster.kubeconfig, cluster.context, (ns, "multimodel-gateway"), backends,
                          propagation_delay=1.0, seed=7, body_router=(ns, "multimodel-bbr")) as gw, \
                TrafficDriver(gw.url, QWEN, rate=4, concurrency=4, max_tokens=4) as to_qwen, \
                TrafficDriver(gw.url, PHI, rate=4, concurrency=4, max_tokens=4) as to_phi:
            there = invoke(cluster, "migrate", "--pattern=multimodel", "--accel=sim", "--to=kserve", f"-n={ns}",
                           f"--url={gw.url}", *steps, timeout=900)
            time.sleep(2)
        (row,) = json.loads(invoke(cluster, "status", f"--namespace={ns}", "--output=json").stdout)
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))   # smoke's and bench's discovery, as they see it
        seen = as_deployed(build_plan(Request("multimodel", "sim", "kserve", namespace=ns)), cluster.context)
        reports = {QWEN: to_qwen.report(), PHI: to_phi.report()}
        for model, report in reports.items():
            assert report.failures == [], model + ": " + report.summary() + "\n" + there.stdout[-3000:]
        assert {r.backend for r in reports[QWEN].records} == {f"{ns}/{qwen}", f"{ns}/{qwen}-inference-pool"}
        assert {r.backend for r in reports[PHI].records} == {f"{ns}/{phi_name}", f"{ns}/{phi_name}-inference-pool"}
        assert "verify the target through its probe rule" in there.stdout and "completion" in there.stdout
        # once the source is gone, each model is called as clients call it (the router fills the header)
        assert there.stdout.count("ok    completion") == 2 * 2 and "verify the clients through the client rules" \
            in there.stdout, there.stdout
        # the router stayed with the Gateway (the same object) and changed hands with it; kserve rendered
        # none of its own (no EnvoyFilter in KServe's namespace)
        after = json.loads(cluster.kubectl("get", "service", "multimodel-bbr", "-n", ns, "-o", "json").stdout)
        assert after["metadata"]["uid"] == bbr["metadata"]["uid"]
        assert after["metadata"]["labels"]["lightrail.dev/stack"] == "kserve", after["metadata"]["labels"]
        assert (row["stack"], row["ready"], row["desired"]) == ("kserve", 2, 2), row
        # smoke and bench find it behind the kept Gateway, and send the names clients send there
        assert (seen.gateway.namespace, seen.gateway.name, seen.served_models) == (ns, "multimodel-gateway", (QWEN, PHI))
        assert not json.loads(cluster.kubectl("get", "envoyfilters", "-n", "kserve", "-o", "json").stdout)["items"]
    finally:
        invoke(cluster, "teardown", "--pattern=multimodel", f"--namespace={ns}", ok=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_multimodel_from_kserves_shared_gateway_keeps_the_names_clients_send_there(kserve, tiny_model):  # noqa: F811
    """multimodel deployed on kserve, under traffic to both models through KServe's shared gateway,
    moves to llmd: clients keep sending publishers/<namespace>/models/<model>, the llmd target answers
    to those names, and the kserve deployment's body-based router (its Service here, its EnvoyFilter in
    KServe's namespace) stays with the Gateway and changes hands; teardown of the llmd deployment then
    removes it. One real vLLM per model answers as the qualified name, for both stacks' pools."""
    from concurrent.futures import ThreadPoolExecutor

    from lightrail.testing.vllm import VLLMServer

    cluster, ns = kserve, "mig-mm-kserve"
    names = {model: f"publishers/{ns}/models/{model}" for model in (QWEN, PHI)}
    servers = {model: VLLMServer(tiny_model, name, startup_timeout=600) for model, name in names.items()}
    qwen, phi_name = "multimodel-qwen2-5-3b-instruct", "multimodel-phi-3-mini-4k-instruct"
    router = f"{ns}-multimodel-bbr"    # the EnvoyFilter's name in KServe's namespace
    try:
        with ThreadPoolExecutor(2) as pool:   # the vLLMs start while the deployment does
            starting = [pool.submit(s.start) for s in servers.values()]
            invoke(cluster, "deploy", "--pattern=multimodel", "--accel=sim", "--stack=kserve", f"--namespace={ns}",
                   "--timeout=300")
            for future in starting:
                future.result()
        backends = {(ns, f"{qwen}-inference-pool"): servers[QWEN].url, (ns, qwen): servers[QWEN].url,
                    (ns, f"{phi_name}-inference-pool"): servers[PHI].url, (ns, phi_name): servers[PHI].url}
        bbr = json.loads(cluster.kubectl("get", "service", "multimodel-bbr", "-n", ns, "-o", "json").stdout)
        envoy = json.loads(cluster.kubectl("get", "envoyfilter", router, "-n", "kserve", "-o", "json").stdout)
        with GatewayModel(cluster.kubeconfig, cluster.context, ("kserve", "kserve-ingress-gateway"), backends,
                          propagation_delay=1.0, seed=7, body_router=(ns, "multimodel-bbr")) as gw, \
                TrafficDriver(gw.url, names[QWEN], rate=4, concurrency=4, max_tokens=4) as to_qwen, \
                TrafficDriver(gw.url, names[PHI], rate=4, concurrency=4, max_tokens=4) as to_phi:
            moved = invoke(cluster, "migrate", "--pattern=multimodel", "--accel=sim", "--to=llmd", f"-n={ns}",
                           f"--url={gw.url}", "--steps=50,100", *FAST[1:], timeout=900)
            time.sleep(2)
        for model, report in {QWEN: to_qwen.report(), PHI: to_phi.report()}.items():
            assert report.failures == [], model + ": " + report.summary() + "\n" + moved.stdout[-3000:]
        assert {r.backend for r in to_qwen.report().records} == {f"{ns}/{qwen}-inference-pool", f"{ns}/{qwen}"}
        assert {r.backend for r in to_phi.report().records} == {f"{ns}/{phi_name}-inference-pool", f"{ns}/{phi_name}"}
        assert "and its body-based router now belong to the llmd deployment" in moved.stdout, moved.stdout
        # the clients' path was called as clients call it once the source was gone: through the router
        assert "verify the clients through the client rules" in moved.stdout, moved.stdout
        for kind, namespace, name, before in (("service", ns, "multimodel-bbr", bbr),
                                              ("envoyfilter", "kserve", router, envoy)):
            after = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
            assert after["metadata"]["uid"] == before["metadata"]["uid"], f"{kind}/{name} was replaced"
            assert after["metadata"]["labels"]["lightrail.dev/stack"] == "llmd", moved.stdout[-3000:]
        (row,) = json.loads(invoke(cluster, "status", f"--namespace={ns}", "--output=json").stdout)
        assert (row["stack"], row["ready"], row["desired"]) == ("llmd", 2, 2), row
        # the llmd model servers (simulators here) answer to the qualified names too (kwok runs no container:
        # the spec says it; tests/test_migrate_plan.py holds vLLM's order, the qualified name first)
        deployments = json.loads(cluster.kubectl("get", "deployments", "-n", ns, "-o", "json").stdout)["items"]
        args = [c.get("args", []) for d in deployments for c in d["spec"]["template"]["spec"]["containers"]
                if d["metadata"]["name"].endswith("-decode")]
        assert sorted(a for arg in args for a in arg if a in names.values()) == sorted(names.values()), args
        invoke(cluster, "teardown", "--pattern=multimodel", f"--namespace={ns}")
        assert not json.loads(cluster.kubectl("get", "envoyfilters", "-n", "kserve", "-o", "json").stdout)["items"]
    finally:
        for server in servers.values():
            server.stop()
        invoke(cluster, "teardown", "--pattern=multimodel", f"--namespace={ns}", ok=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
