"""TLS ingress on the kserve stack against the real controllers: KServe attaches the model's route to
the HTTPS Gateway Lightrail renders (not to its shared one), and istiod accepts that Gateway's HTTPS
listener with the Secret it names and the route."""
from __future__ import annotations

import contextlib
import json
import time

import yaml

from lightrail.ops import controllers
from lightrail.ops.objects import condition, conditions, is_true
from lightrail.plan import Request, build_plan
from lightrail.render import render
from tests.e2e.test_pod_security import need_controller, upstream_crds


def test_kserve_routes_attach_to_the_https_gateway_istiod_programs(cluster, tmp_path):
    for name in ("kserve", "istio"):
        need_controller(name)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    stdin=yaml.safe_dump_all(upstream_crds("gateway-api", "inference-extension", "lws")))
    plan = build_plan(Request("baseline", "sim", "kserve", namespace="tls-kserve", tls_secret="llm-cert",
                              hostname="llm.example.com"))
    objects = render(plan).objects
    controllers.serving_cert(tmp_path / "cert")
    cluster.kubectl("create", "namespace", plan.namespace)
    cluster.kubectl("create", "secret", "tls", "llm-cert", "-n", plan.namespace,
                    f"--cert={tmp_path / 'cert' / 'tls.crt'}", f"--key={tmp_path / 'cert' / 'tls.key'}")
    (gateway,) = [o for o in objects if o["kind"] == "Gateway"]
    with contextlib.ExitStack() as stack:
        for name in ("istio", "kserve"):
            stack.enter_context(controllers.running(name, cluster.kubeconfig, tmp_path / name))
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objects))
        deadline = time.monotonic() + 180
        while True:
            routes = json.loads(cluster.kubectl("get", "httproutes", "-n", plan.namespace, "-o", "json").stdout)["items"]
            live = json.loads(cluster.kubectl("get", "gateway", gateway["metadata"]["name"], "-n", plan.namespace,
                                              "-o", "json").stdout)
            listeners = (live.get("status") or {}).get("listeners") or []
            if routes and listeners and listeners[0].get("attachedRoutes") == 1:
                break
            assert time.monotonic() < deadline, f"{len(routes)} route(s); gateway status {live.get('status')}"
            time.sleep(2)
    (route,) = routes
    assert [(p["name"], p.get("namespace")) for p in route["spec"]["parentRefs"]] == [
        (gateway["metadata"]["name"], plan.namespace)]
    # the HTTPS listener took the Secret and the route (the Gateway's own Programmed needs proxy pods,
    # which no node runs here)
    assert is_true(condition(conditions(live), "Accepted")) and is_true(condition(conditions(live), "ResolvedRefs"))
    (listener,) = live["status"]["listeners"]
    assert listener["name"] == "https" and listener["attachedRoutes"] == 1
    assert all(is_true(condition(listener["conditions"], c)) for c in ("Accepted", "ResolvedRefs", "Programmed"))
    (parent,) = route["status"]["parents"]
    assert is_true(condition(parent["conditions"], "Accepted"))


def test_a_migration_hands_a_kserve_https_gateway_over_to_the_target(cluster, tmp_path, monkeypatch):
    """The handover relabels the kserve deployment's own HTTPS Gateway with the front routes, so the
    migrated (llmd) deployment owns it: its status and teardown find it (the real API server applies
    the labels)."""
    from lightrail.migrate.plan import plan_migration
    from lightrail.migrate.routes import client_rules
    from lightrail.migrate.context import Context
    from lightrail.migrate.run import run_op
    from lightrail.ops.cluster import KubeCluster
    from lightrail.ops.target import Target
    from lightrail.render import to_yaml

    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    stdin=yaml.safe_dump_all(upstream_crds("gateway-api", "inference-extension")))
    ns = "tls-handover"
    cluster.kubectl("create", "namespace", ns)
    source = build_plan(Request("caching", "sim", "kserve", namespace=ns, tls_secret="llm-cert"))
    (gateway,) = [o for o in render(source).objects if o["kind"] == "Gateway"]
    route = {"spec": {"parentRefs": [{"kind": "Gateway", "name": gateway["metadata"]["name"], "namespace": ns}],
                      "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}}
    plain = build_plan(Request("caching", "sim", "kserve", namespace=ns))   # migrate takes no TLS flags
    m = plan_migration(plain, "llmd", (ns, gateway["metadata"]["name"]), {s.name: client_rules(route) for s in plain.servers},
                       {s.name: route["spec"]["parentRefs"] for s in plain.servers})
    handover = m.phases[-1]
    fronts = [o for p in m.phases for op in p.forward if op.action == "apply" for o in op.objects][:1]
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=to_yaml([gateway, *fronts]))
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    lines = []
    ctx = Context(target=Target(cluster.context, ns, "test"), cluster=KubeCluster(cluster.context), out=lines.append,
                  dry_run=False)
    run_op(m, handover.forward[0], ctx)
    live = json.loads(cluster.kubectl("get", "gateway", gateway["metadata"]["name"], "-n", ns, "-o", "json").stdout)
    assert live["metadata"]["labels"]["lightrail.dev/stack"] == "llmd", "\n".join(lines)
    assert f"Gateway/{gateway['metadata']['name']}" in "\n".join(lines)
    run_op(m, handover.backward[0], ctx)     # and back, for a rollback
    live = json.loads(cluster.kubectl("get", "gateway", gateway["metadata"]["name"], "-n", ns, "-o", "json").stdout)
    assert live["metadata"]["labels"]["lightrail.dev/stack"] == "kserve"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
