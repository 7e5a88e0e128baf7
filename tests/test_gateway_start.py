"""The gateway model without an API server to watch: it says so, naming what it could not read,
instead of serving routes it never saw (tests/e2e/test_gateway_model.py runs it against a real one)."""
from __future__ import annotations

import threading

import pytest
import yaml

from lightrail.errors import LightrailError
from lightrail.testing.gateway import GatewayModel
from lightrail.testing.vllm import free_port


def test_no_api_server_is_an_error_naming_the_kinds_it_could_not_list(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "gone", "user": {}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}]}))
    before = threading.active_count()
    model = GatewayModel(kubeconfig, "gone", ("ns", "gw"), {})
    with pytest.raises(LightrailError) as err:
        model.start(timeout=3)
    assert "could not start against http://127.0.0.1:" in str(err.value)
    assert "/apis/gateway.networking.k8s.io/v1/httproutes: ClientConnectorError" in str(err.value)
    assert threading.active_count() == before            # its loop thread is gone too
