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
