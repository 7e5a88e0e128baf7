"""`--no-surge`'s pod operations against the real controllers: a moe deployment's LWS groups leave
their pool from the top, LWS leaves them so, and scaling the LeaderWorkerSet down deletes exactly
those groups; a Deployment's pod leaving its selector is not replaced by one that serves (tests/test_migrate_plan.py models the same operations; tests/e2e/test_migrate.py runs
a whole --no-surge migration of Deployments under traffic)."""
from __future__ import annotations

import contextlib
import json
import time

import yaml

from lightrail.migrate.plan import Op, Options, plan_migration
from lightrail.migrate.routes import client_rules
from lightrail.migrate.context import Context
from lightrail.migrate.run import run_op
from lightrail.ops import controllers
from lightrail.ops.cluster import KubeCluster
from lightrail.ops.target import Target
from lightrail.plan import Request, build_plan
from lightrail.render import render, to_yaml
from lightrail.settings import charts_dir
from lightrail.smoke.discovery import server_pod_labels
from tests.e2e.conftest import apply_nodes
from tests.e2e.test_pod_security import need_controller, upstream_crds

GROUP = "leaderworkerset.sigs.k8s.io/group-index"
POOL_LABEL = "llm-d.ai/inference-serving"


def no_surge(cluster, plan, monkeypatch, drain: float) -> tuple:
    """A --no-surge migration of `plan` to kserve, and a context that runs its operations on the cluster
    (printed lines collected)."""
    gateway = f"{plan.pattern.name}-gateway"
    route = {"spec": {"parentRefs": [{"kind": "Gateway", "name": gateway}],
                      "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}}
    m = plan_migration(plan, "kserve", (plan.namespace, gateway), {s.name: client_rules(route) for s in plan.servers},
                       {s.name: route["spec"]["parentRefs"] for s in plan.servers}, Options(surge=False, drain=drain))
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    lines: list[str] = []
    ctx = Context(target=Target(cluster.context, plan.namespace, "test"), cluster=KubeCluster(cluster.context),
                  out=lines.append, dry_run=False)
    return m, ctx, lines


def test_lws_groups_leave_the_pool_from_the_top_and_go_when_the_set_shrinks(cluster, tmp_path, monkeypatch):
    need_controller("lws")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(upstream_crds("lws")))
    ns = "nosurge-lws"
    plan = build_plan(Request("moe", "gpu", "llmd", namespace=ns, gpu_type="l4", replicas=2))
    size = plan.servers[0].multinode.size
    apply_nodes(cluster, f"gpu:l4:{2 * size}")
    objects = [o for o in render(plan, charts=charts_dir()).objects if o["kind"] in ("ServiceAccount", "LeaderWorkerSet")]
    (lws,) = [o for o in objects if o["kind"] == "LeaderWorkerSet"]
    name = lws["metadata"]["name"]
    cluster.kubectl("create", "namespace", ns)
    m, ctx, lines = no_surge(cluster, plan, monkeypatch, drain=1)

    def pods() -> list[dict]:
        items = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", f"leaderworkerset.sigs.k8s.io/name={name}",
                                           "-o", "json").stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def wait(what, until, timeout=180):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what}: {[(p['metadata']['name'], p['status'].get('phase')) for p in pods()]}"
            time.sleep(1)

    with contextlib.ExitStack() as stack:
        stack.enter_context(controllers.running("lws", cluster.kubeconfig, tmp_path / "lws"))
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=to_yaml(objects))
        wait("both groups running", lambda: len(pods()) == 2 * size
             and all(p["status"].get("phase") == "Running" for p in pods()))

        run_op(m, Op("retire", "retire", side="source", replicas=1), ctx)
        out = {p["metadata"]["name"]: p["metadata"]["labels"] for p in pods()}
        assert sorted(n for n, lbl in out.items() if POOL_LABEL not in lbl) == \
            sorted(n for n, lbl in out.items() if lbl[GROUP] == "1"), out
        assert all(lbl.get("lightrail.dev/retired") == "moe-llmd" for lbl in out.values() if lbl[GROUP] == "1")
        time.sleep(5)     # LWS reconciles; it must neither put the label back nor replace the group
        assert {p["metadata"]["name"]: POOL_LABEL in p["metadata"]["labels"] for p in pods()} == \
            {n: lbl[GROUP] == "0" for n, lbl in out.items()}
        run_op(m, Op("retire", "retire again", side="source", replicas=1), ctx)
        assert "holds 1 replica(s) or fewer already" in lines[-1], lines

        cluster.kubectl("patch", "leaderworkerset", name, "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":1}}')
        wait("group 1 gone", lambda: sorted(p["metadata"]["labels"][GROUP] for p in pods()) == ["0"] * size)
        run_op(m, Op("release", "release", side="source", seconds=1), ctx)
        assert "no retired pod left" in lines[-1], lines
        assert all(p["metadata"]["labels"].get(POOL_LABEL) == "true" for p in pods())
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_pod_leaving_its_deployments_selector_is_not_replaced_by_one_that_serves(cluster, tmp_path, monkeypatch):
    """The pool's labels are also the ReplicaSet's selector (llm-d-modelservice), so a retired pod is let
    go and the ReplicaSet starts a replacement at once. With room for it, kwok makes it Ready in a moment
    and it would join the pool - then the scale-down deletes it while it serves (the migration benchmark
    saw 3 failed requests so). Retiring scales the Deployment down at once: the replacement never gets
    Ready, the retired pod keeps running out of the pool until it is released."""
    ns = "nosurge-rs"
    apply_nodes(cluster, "cpu:2")
    cluster.kubectl("create", "namespace", ns)
    plan = build_plan(Request("caching", "sim", "llmd", namespace=ns))
    pool = {**server_pod_labels(plan, plan.servers[0]), "llm-d.ai/role": "decode"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "caching-decode", "namespace": ns},
                  "spec": {"replicas": 3, "selector": {"matchLabels": pool},
                           "template": {"metadata": {"labels": pool},
                                        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(deployment))
    selector = ",".join(f"{k}={v}" for k, v in server_pod_labels(plan, plan.servers[0]).items())

    def ready_in_pool() -> set[str]:
        items = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout)["items"]
        return {p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}

    deadline = time.monotonic() + 120
    while len(before := ready_in_pool()) < 3:
        assert time.monotonic() < deadline, before
        time.sleep(1)
    m, ctx, lines = no_surge(cluster, plan, monkeypatch, drain=0)
    run_op(m, Op("retire", "retire", side="source", replicas=2), ctx)
    (retired,) = before - ready_in_pool()
    stay = before - {retired}
    for _ in range(20):          # 10 s: kwok readies a scheduled pod within about a second
        now = ready_in_pool()
        assert now >= stay, f"a pod that stays in the pool was deleted: {stay - now}\n" + "\n".join(lines)
        time.sleep(0.5)
    assert ready_in_pool() == stay, "the replacement the ReplicaSet started is still there"
    live = json.loads(cluster.kubectl("get", "deployment", "caching-decode", "-n", ns, "-o", "json").stdout)
    assert live["spec"]["replicas"] == 2 and "Deployment caching-decode scaled to 2 at once" in "\n".join(lines)
    pod = json.loads(cluster.kubectl("get", "pod", retired, "-n", ns, "-o", "json").stdout)
    assert pod["status"]["phase"] == "Running" and not pod["metadata"].get("deletionTimestamp")   # drains, serving nothing new
    run_op(m, Op("release", "release", side="source", seconds=0), ctx)
    assert f"deleting {retired}" in lines[-1], lines
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
