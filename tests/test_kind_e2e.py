"""End to end on a kind cluster (pytest-kind): prereqs, deploy sim patterns, smoke, teardown, nothing left.

Runs wherever a Docker engine answers (`docker info`); skips otherwise. The commands are the
users' own (`invoke ...` in a subprocess, KUBECONFIG pointing at the kind cluster). The kserve
cases also need KServe with its LLMInferenceService controller on the cluster, which prereqs
does not install: point LIGHTRAIL_KIND_CLUSTER at a kind cluster that has it, or they skip.
Set LIGHTRAIL_KEEP_KIND=1 to keep the cluster afterwards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightrail.catalog import load_catalog
from lightrail.ops import kind as kindops
from lightrail.settings import ROOT

DOCKER = kindops.docker_problem()
pytestmark = [pytest.mark.kind, pytest.mark.skipif(
    DOCKER is not None, reason=f"kind e2e needs a Docker engine ({DOCKER}); runs where `docker info` works")]
NAME = os.environ.get("LIGHTRAIL_KIND_CLUSTER", "lightrail-e2e")
NAMESPACE = "lightrail-e2e"


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    from pytest_kind import KindCluster

    work = tmp_path_factory.mktemp("kind")
    cwd = os.getcwd()
    os.chdir(work)   # pytest-kind keeps its files in ./.pytest-kind
    try:
        cluster = KindCluster(NAME, kubeconfig=work / "kubeconfig", kind_path=Path(kindops.binary()),
                              image=load_catalog().versions["cluster"]["kind"]["node-image"])
        cluster.create()
    finally:
        os.chdir(cwd)
    yield cluster.kubeconfig_path
    if not os.environ.get("LIGHTRAIL_KEEP_KIND"):
        cluster.delete()


def invoke(kubeconfig: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"invoke {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def has_kserve(kubeconfig: Path) -> bool:
    out = subprocess.run([str(ROOT / ".tools/bin/kubectl"), f"--kubeconfig={kubeconfig}", "get", "crd",
                          "llminferenceservices.serving.kserve.io"], capture_output=True, text=True)
    return out.returncode == 0


def labelled_left(kubeconfig: Path) -> list[str]:
    """Every object of any kind, in any namespace, that still carries Lightrail's labels."""
    kubectl = str(ROOT / ".tools/bin/kubectl")
    kinds = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "api-resources", "--verbs=list", "--namespaced",
                            "-o", "name"], capture_output=True, text=True, check=True).stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    out = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "get", ",".join(kinds), "--all-namespaces",
                          "-l", "lightrail.dev/stack", "-o", "json"], capture_output=True, text=True, check=True).stdout
    return [f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}" for o in json.loads(out)["items"]]


@pytest.fixture(scope="module")
def prepared(kubeconfig):
    context = f"--kube-context=kind-{NAME}"
    invoke(kubeconfig, "prereqs", "--istio", context)
    again = invoke(kubeconfig, "prereqs", "--istio", context)
    assert "nothing to install" in again.stdout, again.stdout   # idempotent
    return kubeconfig


@pytest.mark.parametrize("stack", ["llmd", "kserve"])
@pytest.mark.parametrize("pattern", ["baseline", "caching"])
def test_deploy_smoke_teardown(prepared, stack, pattern):
    if stack == "kserve" and not has_kserve(prepared):
        pytest.skip("KServe with LLMInferenceService is not installed on the kind cluster (prereqs does not install "
                    "it); set LIGHTRAIL_KIND_CLUSTER to a kind cluster that has it")
    common = (f"--pattern={pattern}", f"--stack={stack}", f"--namespace={NAMESPACE}", f"--kube-context=kind-{NAME}")
    deployed = invoke(prepared, "deploy", "--accel=sim", "--smoke", "--timeout=900", *common)
    assert "endpoint:" in deployed.stdout and "all checks passed" in deployed.stdout
    again = invoke(prepared, "deploy", "--accel=sim", *common)
    assert "nothing to change" in again.stdout
    status = json.loads(invoke(prepared, "status", "--output=json", f"--kube-context=kind-{NAME}").stdout)
    row = next(r for r in status if (r["pattern"], r["stack"], r["namespace"]) == (pattern, stack, NAMESPACE))
    assert row["ready"] == row["desired"] > 0
    gone = invoke(prepared, "teardown", f"--pattern={pattern}", f"--stack={stack}", f"--namespace={NAMESPACE}",
                  f"--kube-context=kind-{NAME}")
    assert "verified: no Lightrail object" in gone.stdout
    assert labelled_left(prepared) == []
