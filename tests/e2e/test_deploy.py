"""Deploy, status, redeploy and teardown against the real control plane, with the real istiod
(built from its pinned Go module) as the gateway controller: every object goes through the real API
server (server-side apply, CRD schemas and CEL rules), the real scheduler places the pods on nodes
shaped like GKE's, kwok makes them Ready, and readiness is followed through real watches."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from lightrail.errors import LightrailError
from lightrail.ops import controllers
from lightrail.settings import ROOT
from tests.e2e.conftest import PLANTED, apply_nodes, invoke

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


def test_interrupted_and_restarted_deploys_converge(gateway):
    """Ctrl-C during the wait: exit 130 with what was applied; an API server restart during the next
    wait: the watches report it and resume; the deploy then converges."""
    cluster = gateway
    namespace = f"{NAMESPACE}-restart"
    args = [sys.executable, "-m", "invoke", "deploy", "--pattern=baseline", "--accel=sim", f"--namespace={namespace}",
            "--timeout=300"]
    first = subprocess.Popen(args, cwd=ROOT, env={**cluster.env, "HF_TOKEN": PLANTED}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if "wait until ready" in line:
            first.send_signal(signal.SIGINT)
            break
    seen += first.stdout.readlines()
    assert first.wait(60) == 130, "".join(seen)
    assert "interrupted" in "".join(seen) and PLANTED not in "".join(seen)

    second = subprocess.Popen(args, cwd=ROOT, env={**cluster.env, "HF_TOKEN": PLANTED}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in second.stdout:
        seen.append(line)
        if "wait until ready" in line or "nothing to change" in line:
            break
    cluster.restart()
    seen += second.stdout.readlines()
    out = "".join(seen)
    assert second.wait(300) == 0, out
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
        yield gateway


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
