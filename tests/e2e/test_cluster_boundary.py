"""`ops.cluster.KubeCluster` — the thin client every flow reads through — against the real API
server: what it returns for a Secret holding a token (the server sends the data, and kubectl's
client-side apply copies it into an annotation)."""
from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from lightrail.ops.cluster import KubeCluster
from tests.e2e.conftest import PLANTED


@pytest.fixture
def token_secret(cluster, monkeypatch):
    """A Secret applied the way a user's `kubectl apply` would: data, and a last-applied copy of it."""
    ns = "e2e-boundary"
    cluster.kubectl("create", "namespace", ns, check=False)
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "lightrail-hf-token", "namespace": ns, "annotations": {"keep": "me"}},
              "stringData": {"HF_TOKEN": PLANTED}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    stored = json.loads(cluster.kubectl("get", "secret", "lightrail-hf-token", "-n", ns, "-o", "json").stdout)
    assert base64.b64decode(stored["data"]["HF_TOKEN"]).decode() == PLANTED
    assert PLANTED in stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    return KubeCluster(cluster.context), ns


def test_get_returns_a_secret_without_its_values(token_secret):
    """Mutant M6 (`get()` returns a Secret with its data): deploy reads the token Secret with get()
    to plan the rollback; what the API answers (data, kubectl's last-applied copy) stays out."""
    client, ns = token_secret
    secret = client.get("v1", "Secret", "lightrail-hf-token", ns)
    assert secret["metadata"]["name"] == "lightrail-hf-token" and secret["metadata"]["resourceVersion"]
    assert "data" not in secret and "stringData" not in secret
    assert secret["metadata"]["annotations"] == {"keep": "me"}
    assert PLANTED not in json.dumps(secret) and base64.b64encode(PLANTED.encode()).decode() not in json.dumps(secret)
    assert client.get("v1", "Secret", "no-such-secret", ns) is None


def test_list_returns_secrets_without_their_values(token_secret):
    client, ns = token_secret
    (secret,) = client.list("v1", "Secret", ns)
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque" and "data" not in secret
    assert secret["metadata"]["annotations"] == {"keep": "me"}
    assert PLANTED not in json.dumps(secret)


def test_reads_ride_out_an_api_server_restart(cluster, monkeypatch):
    """A deploy's last reads (the Gateway's address after the wait) fell on an API-server restart
    and failed the deploy ("Connection refused"), although its watches had ridden the restart out:
    a read refused after the server answered once is retried until the server is back."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = KubeCluster(cluster.context)
    assert client.get("v1", "Namespace", "default")["metadata"]["name"] == "default"
    restart = threading.Thread(target=cluster.restart)
    restart.start()
    try:
        deadline = time.monotonic() + 60
        while cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the API server never went down"
            time.sleep(0.2)
        assert client.get("v1", "Namespace", "default")["metadata"]["name"] == "default"   # while it was down
        assert any(ns["metadata"]["name"] == "default" for ns in client.list("v1", "Namespace"))
    finally:
        restart.join()


def test_apply_creates_then_updates_under_one_field_manager_and_names_what_it_could_not_write(cluster, monkeypatch):
    """The migration's state is written through apply() at every phase: the second write replaces the
    first one's fields (a key it no longer sets is gone, as with kubectl's server-side apply), the
    field manager is the one given, and a refused write is one line naming the object."""
    from lightrail.errors import LightrailError

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = KubeCluster(cluster.context)
    ns = "e2e-boundary-apply"
    cluster.kubectl("create", "namespace", ns, check=False)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state", "namespace": ns,
                                                                 "labels": {"lightrail.dev/pattern": "caching"}}}
    client.apply({**cm, "data": {"state.json": "{\"phase\": \"front\"}", "old": "x"}}, "lightrail")
    client.apply({**cm, "data": {"state.json": "{\"phase\": \"drain\"}"}}, "lightrail")
    stored = client.get("v1", "ConfigMap", "state", ns)
    assert stored["data"] == {"state.json": "{\"phase\": \"drain\"}"}
    assert stored["metadata"]["labels"] == {"lightrail.dev/pattern": "caching"}
    assert [f["manager"] for f in stored["metadata"]["managedFields"]] == ["lightrail"]
    with pytest.raises(LightrailError, match=r"(?i)^could not apply ConfigMap state: .*not found"):
        client.apply({**cm, "metadata": {**cm["metadata"], "namespace": "no-such-namespace"}}, "lightrail")
    with pytest.raises(LightrailError, match="could not apply Widget w: the cluster does not serve Widget"):
        client.apply({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, "lightrail")
