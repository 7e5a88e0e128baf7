"""The PodMonitors Lightrail renders for the kserve stack select the pods the real KServe controller
makes, on ports those pods expose (KServe makes no monitors itself)."""
from __future__ import annotations

import yaml

from lightrail.ops import controllers
from lightrail.plan import Request, build_plan
from lightrail.render import render
from tests.e2e.test_pod_security import ISTIO_KINDS, KSERVE_GATEWAY, _kserve_children, need_controller, upstream_crds


def test_kserve_pod_monitors_select_the_pods_kserve_makes(cluster, tmp_path):
    need_controller("kserve")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    stdin=yaml.safe_dump_all(upstream_crds("gateway-api", "inference-extension", "lws")))
    plan = build_plan(Request("multimodel", "sim", "kserve", namespace="monitoring-kserve", monitoring="prometheus"))
    objects = [o for o in render(plan).objects if o["metadata"].get("namespace") == plan.namespace
               and o["kind"] not in (*ISTIO_KINDS, "PodMonitor", "PrometheusRule")]
    monitors = [o for o in render(plan).objects if o["kind"] == "PodMonitor"]
    with controllers.running("kserve", cluster.kubeconfig, tmp_path):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(
            [KSERVE_GATEWAY, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plan.namespace}},
             *objects]))
        workloads = [w for w in _kserve_children(cluster, objects) if w["kind"] == "Deployment"]
    assert len(monitors) == len(workloads) == 2 * len(plan.servers)   # per model: its servers and its picker
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (chosen,) = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        containers = chosen["spec"]["template"]["spec"]["containers"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p.get("name") for c in containers for p in c.get("ports", [])} | {
            p["containerPort"] for c in containers for p in c.get("ports", [])}
        assert endpoint.get("port", endpoint.get("targetPort")) in ports, (monitor["metadata"]["name"], ports)
