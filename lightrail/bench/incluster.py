"""`--in-cluster`: the harness as a Kubernetes Job next to the gateway (how heavy benchmarks run).

The Job runs `vllm bench serve` from the pinned vLLM CPU image (the harness needs no
accelerator) for every load point, then prints each result between markers so that its log
is the only thing we need to collect. `job` is pure and tested; `run_job` is the one thin
function that talks to a cluster.
"""
from __future__ import annotations

import json
import re
import shlex
import time

from lightrail.bench import vllm_serve
from lightrail.bench.harnesses import Target
from lightrail.bench.scenarios import Scenario
from lightrail.errors import LightrailError
from lightrail.plan import Plan

RESULTS = "/results"
MARKER = "==> lightrail-result"
_MARKED = re.compile(rf"^{re.escape(MARKER)} (point-\d+) <==$")
COMPONENT = {"app.kubernetes.io/component": "benchmark"}


def default_url(plan: Plan) -> str:
    """The gateway's in-cluster address when the implementation's naming is known (Istio)."""
    if plan.stack == "llmd" and plan.gateway.provider == "istio":
        return f"http://{plan.gateway.name}-istio.{plan.gateway.namespace or plan.namespace}.svc.cluster.local"
    raise LightrailError(f"no known in-cluster address for the {plan.stack} stack with provider "
                         f"{plan.gateway.provider}", fix="pass --url=http://SERVICE.NAMESPACE.svc.cluster.local:PORT")


def script(scenario: Scenario, target: Target) -> str:
    """Shell script: one `vllm bench serve` per load point, then every result after a marker."""
    lines = ["set -e"]
    for i, load in enumerate(scenario.points):
        args = vllm_serve.bench_args(scenario, load, target, RESULTS)
        args[args.index("--result-filename") + 1] = f"point-{i:02d}.json"
        args.remove("--save-detailed")          # per-request arrays would bloat the log we collect
        lines.append(shlex.join(["vllm", "bench", "serve", *args]))
    lines.append(f'for f in {RESULTS}/point-*.json; do echo "{MARKER} $(basename "$f" .json) <=="; cat "$f"; echo; done')
    return "\n".join(lines) + "\n"


def job(plan: Plan, scenario: Scenario, target: Target, name: str, *, timeout: int = 3600) -> dict:
    labels = {**plan.labels, **COMPONENT, "lightrail.dev/scenario": scenario.name}
    env = [{"name": "VLLM_NO_USAGE_STATS", "value": "1"}]
    if plan.hf_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": plan.hf_secret, "key": "HF_TOKEN"}}})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": plan.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeout,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "harness",
                        "image": plan.versions["images"]["vllm-cpu"],
                        "command": ["/bin/sh", "-c", script(scenario, target)],
                        "env": env,
                        # The client must not be the bottleneck: two whole cores, requests == limits.
                        "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}},
                        "volumeMounts": [{"name": "results", "mountPath": RESULTS}],
                    }],
                    "volumes": [{"name": "results", "emptyDir": {}}],
                },
            },
        },
    }


def job_name(run_name: str) -> str:
    """A valid Job name (DNS label, <= 63 chars) derived from the run's directory name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"bench-{run_name}".lower()).strip("-")
    return slug[:63].rstrip("-")


def results(log: str) -> dict[str, dict]:
    """The per-point result JSON documents printed after the markers in the Job's log."""
    out: dict[str, dict] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        match = _MARKED.match(line.strip())
        if match and i + 1 < len(lines):
            out[match.group(1)] = json.loads(lines[i + 1])
    return out


def run_job(manifest: dict, *, kube_context: str | None, timeout: float) -> str:
    """Create the Job, wait for it, return its log, and always delete it (the cluster boundary)."""
    from lightrail.tools import run as kubectl_run

    ctx = [f"--context={kube_context}"] if kube_context else []
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    kubectl_run("kubectl", "apply", "-f", "-", "-n", ns, *ctx, input=json.dumps(manifest))
    try:
        deadline = time.monotonic() + timeout
        while True:
            status = json.loads(kubectl_run("kubectl", "get", "job", name, "-n", ns, "-o", "json", *ctx).stdout)["status"]
            if status.get("succeeded") or status.get("failed"):
                break
            if time.monotonic() > deadline:
                raise LightrailError(f"benchmark Job {ns}/{name} did not finish within {timeout:.0f} s")
            time.sleep(5)
        log = kubectl_run("kubectl", "logs", f"job/{name}", "-n", ns, "--tail=-1", *ctx).stdout
        if not status.get("succeeded"):
            tail = " / ".join(log.strip().splitlines()[-3:]) or "no output"
            raise LightrailError(f"benchmark Job {ns}/{name} failed: {tail}")
        return log
    finally:
        kubectl_run("kubectl", "delete", "job", name, "-n", ns, "--wait=false", "--ignore-not-found", *ctx, check=False)
