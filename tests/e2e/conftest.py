"""One real local control plane per test session (kube-apiserver, etcd, controller-manager, scheduler,
kwok), built by scripts/setup from pinned Go modules. Tests run the users' own commands
(`invoke ...` in a subprocess) against it; they skip, naming the fix, where it is not built.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from lightrail.ops import kwok
from lightrail.settings import ROOT
from lightrail.testing.localcluster import LocalCluster

MISSING = kwok.missing_binaries()
PLANTED = "hf_" + "PLANTEDe2eTOKEN0123456789abcdef"   # fake, split so secret scanners stay quiet


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    if MISSING:
        pytest.skip(f"local control plane not built ({', '.join(MISSING)} missing in .tools/bin): "
                    "run scripts/setup with a Go toolchain")
    local = LocalCluster("e2e", tmp_path_factory.mktemp("control-plane"))
    try:   # a start that fails half-way (a timeout on a busy machine) leaves processes: stop them too
        yield local.start()
    finally:
        local.stop()


@pytest.fixture(scope="session")
def vllm_pair(tiny_model):
    """Two real vLLMs serving the same model (eager: no compilation at warm-up), started together once:
    the gateway-model and migration tests let each stand in for one InferencePool."""
    from concurrent.futures import ThreadPoolExecutor

    from lightrail.testing.vllm import VLLMServer
    from tests.conftest import QWEN

    servers = [VLLMServer(tiny_model, QWEN, startup_timeout=600) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(s.start) for s in servers]
    try:
        for future in started:
            future.result()
        yield servers[0].url, servers[1].url
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def vllm_server(request, tiny_model):
    """The e2e tests' plain vLLM is the first of the pair when this session's tests use the pair
    (two servers, not three); else one of its own (`invoke test` runs the tests that use the pair
    in one pytest process and the other e2e tests in another)."""
    from lightrail.testing.vllm import VLLMServer
    from tests.conftest import QWEN, running

    if any("vllm_pair" in item.fixturenames for item in request.session.items):
        yield running(request.getfixturevalue("vllm_pair")[0], QWEN)
        return
    with VLLMServer(tiny_model, QWEN, startup_timeout=600) as server:
        yield server


@pytest.fixture(scope="session")
def kserve_made(cluster, tmp_path_factory):
    """What the real KServe controller makes of the kserve plans test_pod_security and test_monitoring
    check, from one run of it (a minute to start and reconcile): {namespace: (plan, rendered, workloads)}."""
    from tests.e2e.test_pod_security import kserve_made_of

    return kserve_made_of(cluster, tmp_path_factory.mktemp("kserve"))


def invoke(cluster: LocalCluster, *args: str, ok: bool = True, timeout: float = 600,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """A user's command against the local cluster; the planted HF token must never show."""
    full = {**cluster.env, "HF_TOKEN": PLANTED, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)
    assert PLANTED not in proc.stdout + proc.stderr, "the HF token leaked into the output"
    if ok:
        assert proc.returncode == 0, f"invoke {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return proc


def apply_nodes(cluster: LocalCluster, spec: str) -> list[dict]:
    from lightrail.render import to_yaml

    nodes = kwok.node_objects(kwok.parse_nodes(spec))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=to_yaml(nodes))
    # kwok marks them Ready; until it has, doctor counts no schedulable node (slow on a busy machine)
    cluster.kubectl("wait", "--for=condition=Ready", "--timeout=180s", *(f"node/{n['metadata']['name']}" for n in nodes))
    return nodes

