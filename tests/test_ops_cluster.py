"""`ops.cluster.KubeCluster` where no API server answers, or none can answer like this.

What it reads from a real API server (Secrets without their values, discovery of new kinds) is
tested against the local control plane in tests/e2e/test_cluster_boundary.py and
tests/e2e/test_control_plane.py.
"""
from __future__ import annotations

import textwrap

import pytest

from lightrail.errors import LightrailError
from lightrail.ops.secrets import Token

PLANTED = "hf_" + "PLANTEDsecretVALUE42424242424242"   # fake, split so secret scanners stay quiet


def unanswered_kubeconfig(tmp_path):
    """A kubeconfig with one context, `ctx`, whose server nothing answers (port 9, discard)."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                          "users: [{name: u, user: {}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\n")
    return kubeconfig


def test_a_context_whose_server_does_not_answer_is_named(tmp_path, monkeypatch):
    from lightrail.ops import cluster as boundary

    monkeypatch.setenv("KUBECONFIG", str(unanswered_kubeconfig(tmp_path)))
    assert boundary.kubeconfig_contexts() == (["ctx"], None)
    cluster = boundary.KubeCluster("ctx")
    with pytest.raises(LightrailError, match="cluster of context 'ctx' is not reachable"):
        cluster.version()


def test_the_real_boundary_scrubs_api_errors_about_the_secret(tmp_path, monkeypatch):
    """KubeCluster.apply_secret: whatever the API client raises, the value does not travel on. The
    resource is stood in for: no real API server can be made to echo a Secret's value in an error."""
    from lightrail.ops.cluster import KubeCluster

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Config
        clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
        users: [{name: u, user: {token: abc}}]
        contexts: [{name: ctx, context: {cluster: c, user: u}}]
        current-context: ctx
    """))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cluster = KubeCluster("ctx")

    class EchoingResource:
        def server_side_apply(self, body, **kw):
            raise RuntimeError(f"(422) body: {body}")

    monkeypatch.setattr(cluster, "_resource", lambda api_version, kind: EchoingResource())
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lightrail-hf-token", "namespace": "lightrail"}}
    with pytest.raises(LightrailError) as err:
        cluster.apply_secret(secret, Token(PLANTED))
    assert PLANTED not in str(err.value) and "<redacted>" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_an_endpoint_that_cannot_be_read_after_the_wait_is_named_not_raised(tmp_path, monkeypatch):
    """Deploy prints the endpoint of a deployment it found ready: a read that fails then (an API server
    restarting for longer than reads retry) must not fail, and so roll back, the deploy."""
    from lightrail.ops.cluster import KubeCluster
    from lightrail.ops.flows import ready_endpoint
    from lightrail.plan import Request, build_plan

    monkeypatch.setenv("KUBECONFIG", str(unanswered_kubeconfig(tmp_path)))
    for stack in ("llmd", "kserve"):
        plan = build_plan(Request(pattern="baseline", accel="sim", stack=stack, namespace="team-a"))
        said = ready_endpoint(KubeCluster("ctx"), plan)
        assert said.startswith("not read (cluster of context 'ctx' is not reachable: ") and \
            said.endswith("; `invoke status --namespace=team-a` shows it"), said
