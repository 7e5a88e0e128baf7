"""Deploy, status, redeploy and teardown against the real control plane, with the real istiod
(built from its pinned Go module) as the gateway controller: every object goes through the real API
server (server-side apply, CRD schemas and CEL rules), the real scheduler places the pods on nodes
shaped like GKE's, kwok makes them Ready, and readiness is followed through real watches."""
from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from lightrail.errors import LightrailError
from lightrail.ops import controllers
from lightrail.settings import ROOT, TOOLS_BIN
from tests.e2e.conftest import PLANTED, apply_nodes, invoke
from tests.written import written_files  # noqa: F401  (a fixture)

NAMESPACE = "e2e-deploy"


@pytest.fixture(scope="module")
def gateway(cluster, tmp_path_factory):
    """istiod running against the cluster (it creates and accepts GatewayClass istio), and node shapes."""
    try:
        controllers.installed("istio")
    except LightrailError as err:
        pytest.skip(str(err))
    apply_nodes(cluster, "cpu:3,tpu:v6e-2x2:3,gpu:l4:1")
    invoke(cluster, "prereqs", "--local-crds", ok=False)   # before istiod (it watches these kinds from its start); says GatewayClass istio is missing
    with controllers.running("istio", cluster.kubeconfig, tmp_path_factory.mktemp("istiod")):
        yield cluster


def labelled(cluster, namespace: str) -> list[str]:
    kinds = cluster.kubectl("api-resources", "--namespaced", "--verbs=list", "-o", "name").stdout.split()
    found = cluster.kubectl("get", ",".join(k for k in kinds if k not in ("events", "events.events.k8s.io")),
                            "-n", namespace, "-l", "app.kubernetes.io/managed-by in (lightrail,Helm),lightrail.dev/pattern",
                            "-o", "name", check=False).stdout
    return found.split()


@pytest.mark.parametrize("pattern,accel", [("baseline", "sim"), ("multimodel", "sim"), ("caching", "sim"),
                                           ("caching", "tpu"), ("baseline", "gpu")])
def test_deploy_status_redeploy_teardown(gateway, pattern, accel):
    cluster = gateway
    namespace = f"{NAMESPACE}-{pattern}-{accel}"
    args = (f"--pattern={pattern}", f"--accel={accel}", "--stack=llmd", f"--namespace={namespace}")
    first = invoke(cluster, "deploy", *args, "--timeout=300")
    assert "ready" in first.stdout and "endpoint:" in first.stdout, first.stdout

    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    servers = [p for p in pods if p["metadata"]["labels"].get("llm-d.ai/role")]
    want = {"baseline": 1, "multimodel": 2, "caching": 3}[pattern]
    assert len(servers) == want, [p["metadata"]["name"] for p in pods]
    want_node = {"sim": "kwok-cpu-default-", "tpu": "kwok-tpu-v6e-2x2-", "gpu": "kwok-gpu-l4-"}[accel]
    assert all(p["spec"]["nodeName"].startswith(want_node) for p in servers), \
        [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in servers]

    status = json.loads(invoke(cluster, "status", f"--namespace={namespace}", "--output=json").stdout)
    (row,) = status
    assert (row["pattern"], row["stack"], row["accel"]) == (pattern, "llmd", accel)
    assert row["ready"] == row["desired"] == want

    again = invoke(cluster, "deploy", *args, "--timeout=300")
    assert "nothing to change" in again.stdout, again.stdout

    dump = cluster.kubectl("get", "all,secrets,configmaps,events", "-n", namespace, "-o", "yaml").stdout
    assert PLANTED not in dump

    invoke(cluster, "teardown", f"--pattern={pattern}", f"--namespace={namespace}")
    assert labelled(cluster, namespace) == []


def test_pods_that_cannot_be_created_are_explained_and_the_deploy_rolled_back(gateway):
    """A ResourceQuota of zero pods: the ReplicaSets' FailedCreate events, seen through real watches,
    are the explanation; at the timeout the deploy undoes what it applied."""
    cluster = gateway
    namespace = f"{NAMESPACE}-quota"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "quota", "no-pods", "--hard=pods=0", "-n", namespace)
    proc = invoke(cluster, "deploy", "--pattern=baseline", "--accel=sim", f"--namespace={namespace}",
                  "--timeout=40", ok=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "FailedCreate" in out and "exceeded quota" in out, out
    assert "rolled back" in out, out
    assert labelled(cluster, namespace) == []
    releases = cluster.kubectl("get", "secrets", "-n", namespace, "-l", "owner=helm", "-o", "name").stdout
    assert releases.strip() == "", releases


def replicas(cluster, namespace: str, kind: str = "deployments") -> dict[str, int]:
    found = json.loads(cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    return {d["metadata"]["name"]: d["spec"].get("replicas") for d in found}


def test_a_change_that_never_gets_ready_is_rolled_back_to_the_working_helm_revision(gateway):
    """`helm rollback` for real: a working baseline, then --replicas=2 under a quota that admits no
    further pod. At the timeout the model-server release alone goes back to revision 1."""
    cluster = gateway
    namespace = f"{NAMESPACE}-rollback"
    args = ("--pattern=baseline", "--accel=sim", "--stack=llmd", f"--namespace={namespace}")
    invoke(cluster, "deploy", *args, "--timeout=300")
    before = replicas(cluster, namespace)
    pods = len(json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"])
    cluster.kubectl("create", "quota", "no-more-pods", f"--hard=pods={pods}", "-n", namespace)
    proc = invoke(cluster, "deploy", *args, "--replicas=2", "--timeout=20", ok=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "rolled back (1 step(s))" in out, out
    assert re.search(r"not ready \(timed out after 20 s\):\n +Deployment \S+-decode: 1/2 ready", out), out
    (release,) = set(re.findall(r"roll back helm release (\S+) to revision 1", out))   # progress lines repeat it
    history = json.loads(subprocess.run(
        [str(TOOLS_BIN / "helm"), "--kube-context", cluster.context, "history", release, "-n", namespace, "-o", "json"],
        env=cluster.env, capture_output=True, text=True, check=True).stdout)
    assert [(h["revision"], h["status"]) for h in history][-1] == (3, "deployed") and \
        history[-1]["description"] == "Rollback to 1", history
    assert replicas(cluster, namespace) == before
    cluster.kubectl("delete", "quota", "no-more-pods", "-n", namespace)
    invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={namespace}")
    assert labelled(cluster, namespace) == []


def test_a_cluster_without_a_node_for_the_model_stops_the_deploy_before_any_change(cluster):
    """doctor's failures, observed on a real cluster (no node of this GPU type is in it), stop a deploy
    before the first step; a dry run says a real deploy would stop there."""
    namespace = f"{NAMESPACE}-not-ready"
    args = ("deploy", "--pattern=baseline", "--accel=gpu", "--gpu-type=a100-80gb", f"--namespace={namespace}")
    proc = invoke(cluster, *args, ok=False)
    assert proc.returncode == 1 and "the cluster is not ready for this deployment" in proc.stderr, proc.stderr
    assert re.search(r"fail +capacity", proc.stderr) and "nvidia-a100-80gb" in proc.stderr, proc.stderr
    assert cluster.kubectl("get", "namespace", namespace, check=False).returncode == 1   # nothing was created
    dry = invoke(cluster, *args, "--dry-run")
    assert "note: a real deploy would stop here; the cluster is not ready for it:" in dry.stdout
    assert re.search(rf"^\[1\] create namespace {namespace}", dry.stdout, re.M), dry.stdout
    assert cluster.kubectl("get", "namespace", namespace, check=False).returncode == 1


def _started_until(cluster, args: list[str], marker: str) -> tuple[subprocess.Popen, list[str]]:
    """A user's command started, its output read up to the first line with `marker` (or its end)."""
    proc = subprocess.Popen(args, cwd=ROOT, env={**cluster.env, "HF_TOKEN": PLANTED}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
    return proc, seen


def test_interrupted_and_restarted_deploys_converge(gateway):
    """Ctrl-C during the wait: exit 130 with what was applied; an API server restart during the next
    wait: the watches report it and resume; the deploy then converges."""
    cluster = gateway
    namespace = f"{NAMESPACE}-restart"
    args = [sys.executable, "-m", "invoke", "deploy", "--pattern=baseline", "--accel=sim", f"--namespace={namespace}",
            "--timeout=300"]
    # the scheduler frozen: the pods stay Pending, so each deploy is still waiting when Ctrl-C, then the restart,
    # comes (here a wait can end within the second it starts); the restart ends the freeze
    with cluster.frozen("kube-scheduler"):
        first, seen = _started_until(cluster, args, "wait until ready")
        first.send_signal(signal.SIGINT)
        seen += first.stdout.readlines()
        assert first.wait(60) == 130, "".join(seen)
        assert "interrupted" in "".join(seen) and PLANTED not in "".join(seen)

        second, seen = _started_until(cluster, args, "waiting Deployment")
        cluster.restart()
    seen += second.stdout.readlines()
    out = "".join(seen)
    assert second.wait(300) == 0, out
    assert "nothing to change" in out and "watch interrupted" in out, out
    assert "endpoint:" in out, out
    status = json.loads(invoke(cluster, "status", f"--namespace={namespace}", "--output=json").stdout)
    assert status[0]["ready"] == status[0]["desired"]
    invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={namespace}")


@pytest.fixture(scope="module")
def kserve(gateway, tmp_path_factory):
    """KServe's LLMInferenceService controller beside istiod, and KServe's ingress Gateway, as a KServe
    install provides them."""
    from tests.e2e.test_controllers import KSERVE_GATEWAY

    try:
        controllers.installed("kserve")
    except LightrailError as err:
        pytest.skip(str(err))
    with controllers.running("kserve", gateway.kubeconfig, tmp_path_factory.mktemp("kserve")):
        gateway.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(KSERVE_GATEWAY))
        load_balanced(gateway, KSERVE_GATEWAY["metadata"]["namespace"], KSERVE_GATEWAY["metadata"]["name"])
        yield gateway


def load_balanced(cluster, namespace: str, name: str, timeout: float = 90) -> None:
    """What a cloud's load balancer controller does for KServe's LoadBalancer Gateway (none runs here): an
    ingress address in its Service's status, after which istiod reports the Gateway Programmed - which
    KServe waits for once an LLMInferenceService names the Gateway in gateway.refs (a migration's)."""
    service, deadline = f"{name}-istio", time.monotonic() + timeout
    while cluster.kubectl("get", "service", service, "-n", namespace, check=False).returncode:
        assert time.monotonic() < deadline, f"istiod made no Service {namespace}/{service} for Gateway {name}"
        time.sleep(0.5)
    cluster.kubectl("patch", "service", service, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}))
    cluster.kubectl("wait", f"gateway/{name}", "-n", namespace, "--for=condition=Programmed",
                    f"--timeout={int(timeout)}s")


def test_kserve_deploy_reconciled_by_the_real_controller_then_torn_down(kserve):
    """`invoke deploy --stack=kserve`: the LLMInferenceService becomes Ready through KServe (model server
    and endpoint picker Deployments, InferencePool, HTTPRoute on the ingress Gateway that istiod accepts)."""
    cluster = kserve
    namespace = f"{NAMESPACE}-kserve"
    args = ("--pattern=baseline", "--accel=sim", "--stack=kserve", f"--namespace={namespace}")
    first = invoke(cluster, "deploy", *args, "--timeout=300")
    assert "endpoint:" in first.stdout, first.stdout
    deployments = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(deployments) == 2 and all(d["status"].get("readyReplicas") == 1 for d in deployments)
    (row,) = json.loads(invoke(cluster, "status", f"--namespace={namespace}", "--output=json").stdout)
    assert (row["stack"], row["ready"], row["desired"]) == ("kserve", 1, 1)
    assert "nothing to change" in invoke(cluster, "deploy", *args, "--timeout=300").stdout

    invoke(cluster, "teardown", "--pattern=baseline", "--stack=kserve", f"--namespace={namespace}")
    assert labelled(cluster, namespace) == []
    again = invoke(cluster, "teardown", "--pattern=baseline", "--stack=kserve", f"--namespace={namespace}")
    assert "nothing to remove" in again.stdout, again.stdout


def test_the_token_reaches_the_api_and_nothing_else(kserve, written_files, tmp_path, monkeypatch):
    """A deploy in this process (so every file it writes is read while it exists) through the real
    client: the Secret holds the token; no output line, error or written file does."""
    from lightrail.ops import flows
    from lightrail.ops.cluster import KubeCluster
    from lightrail.ops.secrets import Token
    from lightrail.ops.target import Target
    from lightrail.plan import Request, build_plan

    cluster = kserve
    namespace = f"{NAMESPACE}-token"
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    plan = build_plan(Request(pattern="baseline", accel="cpu", stack="kserve", hf_token=True, namespace=namespace))
    lines: list[str] = []
    flows.deploy(plan, Target(cluster.context, namespace, "--kube-context"), KubeCluster(cluster.context),
                 dry_run=False, out=lines.append, token=Token(PLANTED), wait=False)
    stored = json.loads(cluster.kubectl("get", "secret", "lightrail-hf-token", "-n", namespace, "-o", "json").stdout)
    assert base64.b64decode(stored["data"]["HF_TOKEN"]).decode() == PLANTED   # it reached the API
    assert PLANTED not in "\n".join(lines)
    texts = written_files.read(tmp_path)
    written = {moved or path for path, moved in written_files.opened.items()}
    assert any("lightrail-render-" in str(p) for p in written)   # the kustomize tree the deploy renders in
    assert written <= set(texts), "a file the deploy wrote was not read while it existed"
    for path, text in texts.items():
        assert PLANTED not in text, path
    invoke(cluster, "teardown", "--pattern=baseline", "--stack=kserve", f"--namespace={namespace}")
    assert labelled(cluster, namespace) == []
