"""The PodMonitors Lightrail renders for the kserve stack select the pods the real KServe controller
makes, on ports those pods expose (KServe makes no monitors itself)."""
from __future__ import annotations


def test_kserve_pod_monitors_select_the_pods_kserve_makes(kserve_made):
    plan, rendered, workloads = kserve_made["monitoring-kserve"]
    assert plan.request.monitoring == "prometheus"
    monitors = [o for o in rendered if o["kind"] == "PodMonitor"]
    workloads = [w for w in workloads if w["kind"] == "Deployment"]
    assert len(monitors) == len(workloads) == 2 * len(plan.servers)   # per model: its servers and its picker
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (chosen,) = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        containers = chosen["spec"]["template"]["spec"]["containers"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p.get("name") for c in containers for p in c.get("ports", [])} | {
            p["containerPort"] for c in containers for p in c.get("ports", [])}
        assert endpoint.get("port", endpoint.get("targetPort")) in ports, (monitor["metadata"]["name"], ports)
