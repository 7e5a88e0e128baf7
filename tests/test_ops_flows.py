"""The ops flows against an in-memory cluster: the fake replaces only `ops.cluster.KubeCluster`.

Everything above the cluster boundary is real: renders (kustomize, helmfile), planning, the
executor, the watch loop, rollback, the token handling. The fake applies what kubectl/helm
would, and plays the controllers (a reconciled object gets the status its controller writes).
"""
from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.ops import flows
from lightrail.ops.objects import HELM_RELEASE, annotations, group, key, labels, meta
from lightrail.ops.secrets import Token
from lightrail.ops.target import Target
from lightrail.plan import Request, build_plan
from lightrail.render import load_manifests
from lightrail.settings import TOOLS_BIN, charts_dir
from tests.test_ops_readiness import CRASH_LOG, load

TARGET = Target("kind-test", "lightrail", "--kube-context")
PLANTED = "hf_" + "PLANTEDsecretVALUE42424242424242"   # fake, split so secret scanners stay quiet
BASE = load("ops/crds.yaml", "ops/gateways.yaml", "ops/nodes.yaml") + [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in ("kserve", "default")]
GATEWAY_API_URL = "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml"


def settle(obj: dict) -> dict:
    """The status a controller writes once it has reconciled `obj` successfully."""
    gen = obj["metadata"]["generation"]
    ok = lambda kind: {"type": kind, "status": "True", "reason": kind, "message": "", "observedGeneration": gen,
                       "lastTransitionTime": "2026-11-20T10:00:00Z"}
    kind, m = obj["kind"], obj["metadata"]
    if kind == "Deployment":
        n = obj["spec"].get("replicas", 1)
        return {"observedGeneration": gen, "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}
    if kind == "LLMInferenceService":
        return {"observedGeneration": gen, "url": f"http://kserve.example.com/{m['namespace']}/{m['name']}",
                "conditions": [ok("Ready")]}
    if kind == "Gateway":
        return {"addresses": [{"type": "IPAddress", "value": "10.0.0.7"}], "conditions": [ok("Accepted"), ok("Programmed")]}
    if kind in ("HTTPRoute", "InferencePool"):
        parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
        return {"parents": [{"parentRef": parent, "controllerName": "istio.io/gateway-controller",
                             "conditions": [ok("Accepted"), ok("ResolvedRefs")]}]}
    return {}


class FakeCluster:
    """In-memory stand-in for ops.cluster.KubeCluster (same methods; objects are plain dicts)."""

    def __init__(self, objects=(), context="kind-test", controller=settle):
        self.context = context
        self.store = {}
        self.helm: dict[str, dict] = {}
        self.calls: list[tuple[str, tuple, str | None]] = []
        self.secret_values: dict[str, str] = {}
        self.controller = controller
        self.installs: dict[str, list[dict]] = {}
        self.interrupt_when = None      # predicate on (tool, args, stdin): raise KeyboardInterrupt
        self.sticky: set[str] = set()   # names whose deletion never completes (finalizers)
        self.extra_pods: list[dict] = []
        for o in objects:
            self.put(copy.deepcopy(o))

    # --- the boundary's methods ------------------------------------------------------------
    def version(self):
        return "v1.34.0"

    def list(self, api_version, kind, namespace=None, selector=None):
        out = [o for o in self.store.values() if group(o["apiVersion"]) == group(api_version) and o["kind"] == kind
               and (namespace in (None, "") or meta(o).get("namespace") == namespace) and _matches(o, selector)]
        return copy.deepcopy(out)

    def get(self, api_version, kind, name, namespace=None):
        found = self.store.get((group(api_version), kind, namespace or "", name))
        return copy.deepcopy(found)

    def kinds(self):
        return sorted({(o["apiVersion"], o["kind"], bool(meta(o).get("namespace"))) for o in self.store.values()})

    def releases(self, namespace):
        return [dict(r) for r in self.helm.values()]

    def logs(self, namespace, pod, container, lines=20):
        return CRASH_LOG

    def watch(self, specs, stop):
        wanted = {(group(a), k, ns) for a, k, ns in specs}
        for o in list(self.store.values()) + self.extra_pods:
            if (group(o["apiVersion"]), o["kind"], meta(o).get("namespace", "")) in wanted:
                yield "ADDED", copy.deepcopy(o)
        while not stop.is_set():
            time.sleep(0.01)
            yield "TICK", None

    def apply_secret(self, obj, token):
        assert isinstance(token, Token)
        self.secret_values[meta(obj)["name"]] = token.reveal()
        self.put(copy.deepcopy(obj))

    def run(self, tool, args, stdin=None, timeout=300):
        self.calls.append((tool, tuple(args), stdin))
        if self.interrupt_when and self.interrupt_when(tool, args, stdin):
            raise KeyboardInterrupt
        verb = [a for a in args if not a.startswith("--")][0]
        if tool == "kubectl" and verb == "apply":
            source = args[args.index("-f") + 1]
            for o in (load_manifests(stdin) if source == "-" else copy.deepcopy(self.installs[source])):
                self.put(o)
        elif tool == "kubectl" and verb == "delete":
            for o in load_manifests(stdin):
                self.remove(key(o))
        elif tool == "helmfile":
            for release in [args[i + 1].removeprefix("name=") for i, a in enumerate(args) if a == "--selector"]:
                self._helm_install(release, args)
        elif tool == "helm" and verb == "uninstall":
            names = [a for a in args[args.index("uninstall") + 1:] if not a.startswith("-")][:-1]   # last is the namespace
            for name in names:
                self.helm.pop(name, None)
                for k in [k for k, o in self.store.items() if annotations(o).get(HELM_RELEASE) == name]:
                    self.remove(k)
        elif tool == "helm" and verb == "upgrade" and "istiod" in args:
            self.put({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "istio"},
                      "spec": {"controllerName": "istio.io/gateway-controller"}})
        return "done"

    # --- helpers ---------------------------------------------------------------------------
    def put(self, obj):
        m = obj.setdefault("metadata", {})
        old = self.store.get(key(obj))
        m["generation"] = (old["metadata"]["generation"] + (old.get("spec") != obj.get("spec"))) if old else 1
        m.setdefault("creationTimestamp", "2026-11-20T10:00:00Z")
        if self.controller and "status" not in obj:
            obj["status"] = self.controller(obj)
        self.store[key(obj)] = obj

    def remove(self, k):
        if k[3] in self.sticky:
            return
        self.store.pop(k, None)
        if k[1] == "Namespace":
            for other in [o for o in self.store if o[2] == k[3]]:
                self.store.pop(other)

    def _helm_install(self, release, args):
        """What `helm upgrade --install` applies: the release's objects, rendered by the real helmfile."""
        base = list(args[args.index("--file"):args.index("--selector")])
        out = tools.run("helmfile", *base, "--selector", f"name={release}", "template", "--skip-deps",
                        env={"KUBECTL": str(TOOLS_BIN / "kubectl")}).stdout
        for o in load_manifests(out):
            o["metadata"].setdefault("annotations", {})[HELM_RELEASE] = release
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
            self.put(o)
        previous = self.helm.get(release, {"revision": "0"})
        self.helm[release] = {"name": release, "namespace": "lightrail", "status": "deployed",
                              "revision": str(int(previous["revision"]) + 1), "chart": "llm-d-modelservice-v0.4.12"}


def _matches(obj, selector):
    for part in (selector or "").split(","):
        if not part:
            continue
        k, _, v = part.partition("=")
        if (v and labels(obj).get(k) != v) or (not v and k not in labels(obj)):
            return False
    return True


def kserve_plan(pattern="baseline", accel="sim", **kw):
    return build_plan(Request(pattern=pattern, accel=accel, stack="kserve", **kw))


def deploy(cluster, plan, lines, **kw):
    kw.setdefault("timeout", 5)
    return flows.deploy(plan, TARGET, cluster, dry_run=False, out=lines.append, **kw)


def ours(cluster):
    return sorted(f"{k[1]} {k[2]}/{k[3]}" for k, o in cluster.store.items() if "lightrail.dev/stack" in labels(o))


# ---------------------------------------------------------------------------------------------
# deploy


def test_kserve_deploy_then_deploy_again_changes_nothing():
    cluster, lines = FakeCluster(BASE), []
    plan = kserve_plan("multimodel")
    deploy(cluster, plan, lines)
    assert lines[0] == "deploy multimodel (sim, kserve) to context kind-test (--kube-context), namespace lightrail"
    applies = [c for c in cluster.calls if c[1][1] == "apply"]
    assert [load_manifests(c[2])[0]["kind"] for c in applies] == ["Namespace", "ServiceAccount", "DestinationRule"]
    assert "EnvoyFilter kserve/lightrail-multimodel-bbr" in ours(cluster)
    assert any(l.startswith("  ") and "ready   LLMInferenceService lightrail/multimodel-qwen2-5-3b-instruct: Ready" in l
               for l in lines)
    assert "endpoint: http://kserve.example.com" in lines[-1]
    lines.clear()
    cluster.calls.clear()
    deploy(cluster, plan, lines)
    assert cluster.calls == []
    assert any(l.startswith("nothing to change: 21 item(s) already as desired") for l in lines)


def test_failure_names_the_object_and_why_rolls_back_and_fails():
    plan = kserve_plan(pattern="baseline")
    name = plan.servers[0].name
    crashing = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"{name}-kserve-5d7f-abcde", "namespace": "lightrail",
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llminferenceservice"}},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "main", "image": "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2", "imageID": "", "ready": False,
            "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}

    def controller(obj):
        if obj["kind"] == "LLMInferenceService":
            return {"observedGeneration": obj["metadata"]["generation"], "conditions": [
                {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability.", "lastTransitionTime": "2026-11-20T10:00:00Z"}]}
        return settle(obj)

    cluster, lines = FakeCluster(BASE, controller=controller), []
    cluster.extra_pods = [crashing]
    with pytest.raises(LightrailError) as err:
        deploy(cluster, plan, lines, timeout=600)
    assert str(err.value) == "deploy of baseline failed; rolled back (3 step(s))"
    failure = next(l for l in lines if l.startswith("deploy failed"))
    assert f"LLMInferenceService lightrail/{name}: not Ready" in failure
    assert "crash-looping (5 restarts; last exit code 137 (OOMKilled))" in failure and "KV cache" in failure
    assert "rolling back what this deploy changed:" in lines
    deletes = [c for c in cluster.calls if c[1][1] == "delete"]
    assert [load_manifests(c[2])[0]["kind"] for c in deletes] == ["LLMInferenceService", "NetworkPolicy", "Namespace"]
    assert ours(cluster) == [] and ("", "Namespace", "", "lightrail") not in cluster.store


def test_timeout_rolls_back_to_the_previous_objects():
    plan = kserve_plan(replicas=1)
    cluster, lines = FakeCluster(BASE), []
    deploy(cluster, plan, lines)
    before = copy.deepcopy(cluster.store)
    cluster.controller = lambda o: {} if o["kind"] == "LLMInferenceService" else settle(o)
    bigger = kserve_plan(replicas=2)
    with pytest.raises(LightrailError, match="rolled back"):
        deploy(cluster, bigger, lines, timeout=0.2)
    assert "timed out after 0 s" in next(l for l in lines if l.startswith("deploy failed"))
    restore = cluster.calls[-1]
    assert "--force-conflicts" in restore[1] and load_manifests(restore[2])[0]["spec"]["replicas"] == 1
    svc = next(k for k in cluster.store if k[1] == "LLMInferenceService")
    assert cluster.store[svc]["spec"] == before[svc]["spec"]


def test_ctrl_c_reports_half_applied_state_and_how_to_undo_it():
    cluster, lines = FakeCluster(BASE), []
    cluster.interrupt_when = lambda tool, args, stdin: bool(stdin) and "LLMInferenceService" in stdin
    with pytest.raises(KeyboardInterrupt):
        deploy(cluster, kserve_plan(), lines)
    report = lines[lines.index("interrupted on context kind-test (--kube-context), namespace lightrail; "
                               "the cluster is left as it is:"):]
    assert report[1:4] == ["  applied: create namespace lightrail", "  applied: apply built-in objects (5)",
                           "  HALF-APPLIED (interrupted while running): apply custom resources (1)"]
    assert report[4].startswith("to undo, run these (or `invoke teardown --pattern=baseline --stack=kserve")
    assert all("kubectl --context=kind-test delete" in l for l in report[5:8])
    assert not any(c[1][1] == "delete" for c in cluster.calls)   # nothing undone behind the user's back


class Writes:
    """The files written while a test watches: `opened` (path -> where a rename moved it) and
    `texts` (path -> its text, read while it existed)."""

    def __init__(self):
        self.opened: dict[Path, Path | None] = {}
        self.texts: dict[Path, str] = {}

    def read(self, root: Path) -> dict[Path, str]:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                self.texts[path.resolve()] = path.read_text(errors="replace")
        return self.texts


_WATCHING: list[Writes] = []


def _record_writes(event: str, args: tuple) -> None:
    """Audit hook (it runs before the operation): note every file opened for writing, follow its
    renames, and read a noted file just before it is removed."""
    if not _WATCHING or event not in ("open", "os.rename", "os.remove") \
            or not isinstance(args[0], (str, os.PathLike)):
        return
    writes, path = _WATCHING[-1], Path(args[0]).resolve()
    if event == "open":
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & (os.O_WRONLY | os.O_RDWR)):
            writes.opened[path] = None
    elif event == "os.rename" and path in writes.opened:
        writes.opened[path] = Path(args[1]).resolve()
    elif event == "os.remove" and args[1] in (None, -1) and path in writes.opened and path.is_file():
        writes.read(path)


sys.addaudithook(_record_writes)


@pytest.fixture
def written_files(tmp_path, monkeypatch):
    """Watch the files a test writes (TMPDIR, HOME and XDG_CACHE_HOME point into tmp_path): a
    temporary tree is read just before it is removed, a single file just before it is deleted."""
    for var, sub in (("TMPDIR", "tmp"), ("HOME", "home"), ("XDG_CACHE_HOME", "cache")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setattr(tempfile, "tempdir", None)
    writes = Writes()
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):   # TemporaryDirectory's cleanup comes through here too
        writes.read(Path(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    _WATCHING.append(writes)
    try:
        yield writes
    finally:
        _WATCHING.remove(writes)


def test_planted_token_never_appears_in_output_errors_or_files(written_files, tmp_path):
    """Output, errors, and every file the deploys write, each read while it exists."""
    token = Token(PLANTED)
    plan = kserve_plan(accel="cpu", hf_token=True)
    lines: list[str] = []
    flows.deploy(plan, TARGET, None, dry_run=True, out=lines.append, token=token)
    cluster = FakeCluster(BASE)
    deploy(cluster, plan, lines, token=token)
    assert cluster.secret_values == {"lightrail-hf-token": PLANTED}   # it reached the API, and only the API
    # an API error that echoes the request, and a tool error that echoes its input
    broken = FakeCluster(BASE)
    broken.apply_secret = lambda obj, tok: (_ for _ in ()).throw(LightrailError(
        f"could not store Secret: 422 Unprocessable: stringData.HF_TOKEN={tok.reveal()}"))
    with pytest.raises(LightrailError) as err1:
        deploy(broken, plan, lines, token=token)
    noisy = FakeCluster(BASE)
    noisy.run = lambda *a, **k: (_ for _ in ()).throw(LightrailError(f"kubectl apply failed: saw {PLANTED}"))
    with pytest.raises(LightrailError) as err2:
        deploy(noisy, plan, lines, token=token)
    outputs = ["\n".join(lines), str(err1.value), repr(err1.value), str(err2.value), repr(token), f"{token}"]
    assert "stringData.HF_TOKEN=<redacted>" in outputs[0] and "saw <redacted>" in outputs[0]
    for text in outputs:
        assert PLANTED not in text
    texts = written_files.read(tmp_path)   # what is still there, and what was read before it went
    written = {moved or path for path, moved in written_files.opened.items()}
    assert any("lightrail-render-" in str(p) for p in written)   # the kustomize tree the deploy renders in
    assert written <= set(texts), "a file the deploy wrote was not read while it existed"
    for path, text in texts.items():
        assert PLANTED not in text, path


def test_doctor_failures_stop_the_deploy_before_any_change():
    cluster = FakeCluster([o for o in BASE if o["kind"] != "CustomResourceDefinition"
                           or o["spec"]["group"] != "serving.kserve.io"])
    with pytest.raises(LightrailError) as err:
        deploy(cluster, kserve_plan(), [])
    assert "not ready for this deployment" in str(err.value)
    assert "CRD LLMInferenceService serving.kserve.io/v1alpha2  not installed" in str(err.value)
    assert cluster.calls == []
    lines = []
    flows.deploy(kserve_plan(), TARGET, cluster, dry_run=True, out=lines.append)
    assert "note: a real deploy would stop here; the cluster is not ready for it:" in lines
    assert any(l.startswith("[1] create namespace lightrail") for l in lines) and cluster.calls == []


@pytest.mark.skipif(charts_dir() is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
def test_llmd_deploy_syncs_releases_once_and_rolls_back_with_helm():
    plan = build_plan(Request(pattern="caching", accel="sim"))
    cluster, lines = FakeCluster(BASE), []
    deploy(cluster, plan, lines, charts=charts_dir())
    (sync,) = [c for c in cluster.calls if c[0] == "helmfile"]
    assert sync[1][0] == "--kube-context=kind-test" and sync[1][-2:] == ("sync", "--skip-deps")
    assert set(cluster.helm) == {"caching-infra", "caching-qwen2-5-3b-instruct", "caching-qwen2-5-3b-instruct-ms"}
    assert "endpoint: http://10.0.0.7" in lines
    cluster.calls.clear()
    deploy(cluster, plan, lines, charts=charts_dir())
    assert [c for c in cluster.calls if c[0] != "helm" or c[1][1] != "list"] == []
    # a change to one release, then a failure: that release alone is synced and rolled back
    cluster.controller = lambda o: {} if o["kind"] == "Deployment" else settle(o)
    more = build_plan(Request(pattern="caching", accel="sim", replicas=4))
    with pytest.raises(LightrailError, match="rolled back"):
        deploy(cluster, more, lines, charts=charts_dir(), timeout=0.2)
    helm = [" ".join(c[1]) for c in cluster.calls if c[0] in ("helm", "helmfile")]
    assert "--selector name=caching-qwen2-5-3b-instruct-ms sync" in helm[0] and "name=caching-infra" not in helm[0]
    assert helm[1] == ("--kube-context=kind-test rollback caching-qwen2-5-3b-instruct-ms 1 --namespace lightrail "
                       "--wait --timeout=300s")


# ---------------------------------------------------------------------------------------------
# status, teardown, prereqs, doctor


def test_status_lists_every_deployment_found_by_labels():
    cluster, lines = FakeCluster(BASE), []
    deploy(cluster, kserve_plan("multimodel"), lines)
    live = load("ops/workloads.yaml", "ops/routing.yaml")
    helm_gateway = copy.deepcopy(load("cluster/gateway-programmed.yaml")[0])
    helm_gateway["metadata"]["labels"].update({"lightrail.dev/accel": "tpu", "lightrail.dev/pattern": "caching"})
    for o in live + [helm_gateway]:
        cluster.store[key(o)] = o
    rows = flows.status(cluster, "", now=datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc))
    summary = {(r.pattern, r.stack): r for r in rows}
    caching = summary[("caching", "llmd")]
    assert (caching.accel, caching.ready, caching.desired) == ("tpu", 2, 5)   # model servers: 1/3 (TPU) + 1/1 + 0/1
    assert caching.endpoint == "http://34.118.10.20" and caching.age == "3h30m"
    mm = summary[("multimodel", "kserve")]
    assert mm.models == ["Qwen/Qwen2.5-3B-Instruct", "microsoft/Phi-3-mini-4k-instruct"]
    assert (mm.ready, mm.desired) == (2, 2) and mm.endpoint == "http://kserve.example.com"
    baseline_kserve = summary[("baseline", "kserve")]
    assert (baseline_kserve.ready, baseline_kserve.desired) == (1, 2)
    assert baseline_kserve.last_condition == "LLMInferenceService baseline-qwen2-5-0-5b-instruct: Ready=False " \
                                             "(MinimumReplicasUnavailable)"
    assert [r.pattern for r in flows.status(cluster, "elsewhere")] == []


def test_teardown_removes_everything_verifies_and_is_idempotent():
    cluster, lines = FakeCluster(BASE), []
    deploy(cluster, kserve_plan("multimodel", accel="cpu", hf_token=True), lines, token=Token(PLANTED))
    before = ours(cluster)
    assert "Secret lightrail/lightrail-hf-token" in before and "EnvoyFilter kserve/lightrail-multimodel-bbr" in before
    lines.clear()
    result = flows.teardown(TARGET, cluster, pattern="multimodel", stack=None, keep_pvcs=False, dry_run=False,
                            out=lines.append, timeout=5)
    assert ours(cluster) == []
    (delete,) = cluster.calls[-1:]
    kinds = [o["kind"] for o in load_manifests(delete[2])]
    assert kinds[:2] == ["LLMInferenceService", "LLMInferenceService"] and kinds[-1] != "LLMInferenceService"
    assert sorted(result.removes) == before
    assert lines[-1] == "verified: no Lightrail object of pattern multimodel is left in lightrail (namespace lightrail " \
                        "itself is kept)"
    lines.clear()
    flows.teardown(TARGET, cluster, pattern="multimodel", stack=None, keep_pvcs=False, dry_run=False, out=lines.append)
    assert lines[-1] == "nothing to remove: no Lightrail objects of pattern multimodel in namespace lightrail"


def test_teardown_uninstalls_releases_keeps_pvcs_and_leaves_others_alone():
    cluster = FakeCluster(BASE)
    llmd = [o for o in load("ops/workloads.yaml", "ops/routing.yaml") if "lightrail.dev/stack" in labels(o)]
    for o in llmd:
        cluster.store[key(o)] = o
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": "caching-weights", "namespace": "lightrail", "labels": {"lightrail.dev/pattern": "caching",
                                                                       "lightrail.dev/stack": "llmd"}}}
    other_ns = copy.deepcopy(llmd[0])
    other_ns["metadata"]["namespace"] = "team-b"
    cluster.store[key(pvc)] = pvc
    cluster.store[key(other_ns)] = other_ns
    cluster.helm = {"caching-infra": {"name": "caching-infra", "chart": "llm-d-infra-v1.4.0", "revision": "1"},
                    "caching-web": {"name": "caching-web", "chart": "nginx-18.1.0", "revision": "3"}}
    lines = []
    result = flows.teardown(TARGET, cluster, pattern="caching", stack="llmd", keep_pvcs=True, dry_run=False,
                            out=lines.append, timeout=5)
    (uninstall,) = [c for c in cluster.calls if c[0] == "helm"]
    assert uninstall[1][:2] == ("--kube-context=kind-test", "uninstall")
    released = uninstall[1][2:uninstall[1].index("--namespace")]
    assert "caching-infra" in released and "caching-web" not in released
    assert result.kept == ["PersistentVolumeClaim lightrail/caching-weights"]
    assert "PersistentVolumeClaim lightrail/caching-weights" in ours(cluster)
    assert "caching-web" in cluster.helm and other_ns["metadata"]["name"] in " ".join(ours(cluster))
    assert not any(o.startswith("Deployment lightrail/caching") for o in ours(cluster))


def test_teardown_says_what_was_left_behind():
    cluster, lines = FakeCluster(BASE), []
    plan = kserve_plan()
    deploy(cluster, plan, lines)
    cluster.sticky = {plan.servers[0].name}
    with pytest.raises(LightrailError) as err:
        flows.teardown(TARGET, cluster, pattern=None, stack=None, keep_pvcs=False, dry_run=False, out=lines.append,
                       timeout=0.05, poll=0.01)
    assert f"teardown left 1 labelled object(s) after 0 s:\n  LLMInferenceService lightrail/{plan.servers[0].name}" \
        in str(err.value) and "finalizers" in str(err.value)


def test_dry_run_teardown_changes_nothing():
    cluster, lines = FakeCluster(BASE), []
    deploy(cluster, kserve_plan(), lines)
    before, lines = ours(cluster), []
    cluster.calls.clear()
    flows.teardown(TARGET, cluster, pattern="baseline", stack=None, keep_pvcs=False, dry_run=True, out=lines.append)
    assert cluster.calls == [] and ours(cluster) == before
    shown = lines[1].splitlines()
    assert shown[0] == "[1] delete 6 labelled object(s)"
    assert shown[1].startswith("    $ kubectl --context=kind-test delete --ignore-not-found --wait=true")


def test_prereqs_install_then_find_everything_present():
    cluster = FakeCluster([o for o in BASE if o["kind"] not in ("CustomResourceDefinition", "GatewayClass")])
    gw_crds = [c for c in load("ops/crds.yaml") if c["spec"]["group"] == "gateway.networking.k8s.io"]
    pool = [c for c in load("ops/crds.yaml") if c["spec"]["group"] == "inference.networking.k8s.io"]
    lws = [c for c in load("ops/crds.yaml") if c["spec"]["group"] == "leaderworkerset.x-k8s.io"]
    rewrite = [c for c in load("ops/crds.yaml") if c["spec"]["group"] == "llm-d.ai"]
    for url_part, objs in (("gateway-api/", gw_crds), ("inference-extension", pool), ("lws/", lws),
                           ("llm-d-router/", rewrite)):
        cluster.installs[next(u for u in _pinned_urls() if url_part in u)] = objs
    lines = []
    first = flows.prereqs(TARGET, cluster, stack="llmd", provider="istio", istio=True, dry_run=False, out=lines.append)
    assert len(first.steps) == 7 and first.missing == []
    assert [c[0] for c in cluster.calls] == ["kubectl"] * 5 + ["helm", "helm"]
    # the endpoint picker looks for the InferenceModelRewrite CRD once, at start: it comes before any deploy
    assert any("InferenceModelRewrite CRD" in line for line in lines)
    cluster.calls.clear()
    lines.clear()
    second = flows.prereqs(TARGET, cluster, stack="llmd", provider="istio", istio=True, dry_run=False, out=lines.append)
    assert second.steps == [] and cluster.calls == [] and "nothing to install" in lines


def _pinned_urls():
    from lightrail.catalog import load_catalog

    return [c["url"] for c in load_catalog().versions["crds"].values() if c.get("url")]


def test_doctor_flow_reports_each_check():
    cluster = FakeCluster(BASE)
    plan = build_plan(Request(pattern="caching", accel="tpu"))
    checks = flows.doctor(TARGET, cluster, "llmd", "istio", plan, None, token_given=True)
    table = "\n".join(flows.check_table(checks))
    assert "ok    cluster" in table and "context kind-test, Kubernetes v1.34.0" in table
    assert "fail  capacity" in table and "missing 8 google.com/tpu" in table and "fix: add 2 pod(s)' worth" in table
    unreachable = flows.doctor(TARGET, None, "llmd", "istio")
    assert [c.name for c in unreachable if c.status == "fail"] == ["cluster"]


# ---------------------------------------------------------------------------------------------
# Background processes: no port-forward survives Ctrl-C or SIGTERM

FAKE_KUBECTL = textwrap.dedent("""\
    #!/usr/bin/env python3
    # stands in for `kubectl port-forward` (no cluster here): announce a port, then serve until killed
    import os, sys, time
    open(os.environ["PF_PIDFILE"], "w").write(str(os.getpid()))
    print("Forwarding from 127.0.0.1:43123 -> 8080", flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie still answers kill(0): look at its state
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch):
    script = tmp_path / "kubectl"
    script.write_text(FAKE_KUBECTL)
    script.chmod(0o755)
    monkeypatch.setenv("PF_PIDFILE", str(tmp_path / "pid"))
    return script


def test_ctrl_c_inside_a_port_forward_stops_it(fake_kubectl, monkeypatch, tmp_path):
    from lightrail import portforward

    monkeypatch.setattr(portforward, "binary", lambda tool: str(fake_kubectl))
    with pytest.raises(KeyboardInterrupt):
        with portforward.port_forward("svc/gw", 80, namespace="lightrail", kube_context="kind-test") as url:
            assert url == "http://127.0.0.1:43123"
            pid = int((tmp_path / "pid").read_text())
            assert _alive(pid)
            raise KeyboardInterrupt
    assert not _alive(pid)


def test_sigterm_stops_the_port_forward_too(fake_kubectl, tmp_path):
    program = textwrap.dedent(f"""\
        import time
        from lightrail import portforward
        from lightrail.ops.executor import sigterm_as_interrupt
        portforward.binary = lambda tool: {str(fake_kubectl)!r}
        try:
            with sigterm_as_interrupt():
                with portforward.port_forward("svc/gw", 80, namespace="lightrail") as url:
                    print("up", flush=True)
                    time.sleep(60)
        except KeyboardInterrupt:
            print("cleaned up", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PF_PIDFILE": str(tmp_path / "pid")})
    assert proc.stdout.readline().strip() == "up"
    child = int((tmp_path / "pid").read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "cleaned up" and proc.returncode == 0
    assert not _alive(child)


def test_the_real_boundary_scrubs_api_errors_about_the_secret(tmp_path, monkeypatch):
    """KubeCluster.apply_secret: whatever the API client raises, the value does not travel on."""
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


def test_the_real_boundary_lists_without_secret_values(tmp_path, monkeypatch):
    from lightrail.ops import cluster as boundary

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                          "users: [{name: u, user: {}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert boundary.kubeconfig_contexts() == (["ctx"], None)
    cluster = boundary.KubeCluster("ctx")
    with pytest.raises(LightrailError, match="cluster of context 'ctx' is not reachable"):
        cluster.version()
    applied = ('{"apiVersion":"v1","kind":"Secret","data":{"HF_TOKEN":"' + PLANTED + '"}}')

    class Listing:
        def get(self, **kw):
            item = {"metadata": {"name": "lightrail-hf-token", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": applied, "keep": "me"}},
                "data": {"HF_TOKEN": "aGZf"}, "stringData": {"HF_TOKEN": PLANTED}, "type": "Opaque"}
            return type("Result", (), {"to_dict": lambda self: {"items": [item]}})()

    monkeypatch.setattr(cluster, "_resource", lambda api_version, kind: Listing())
    (secret,) = cluster.list("v1", "Secret", "lightrail")
    assert secret == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": "lightrail-hf-token", "annotations": {"keep": "me"}}}


def test_the_real_boundary_gets_a_secret_without_its_values(tmp_path, monkeypatch):
    """Mutant M6 (`get()` returns a Secret with its data): deploy reads the token Secret with get()
    to plan the rollback; what the API answers (data, and kubectl's last-applied copy) stays out."""
    from lightrail.ops import cluster as boundary

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                          "users: [{name: u, user: {}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cluster = boundary.KubeCluster("ctx")
    applied = '{"apiVersion":"v1","kind":"Secret","stringData":{"HF_TOKEN":"' + PLANTED + '"}}'
    answer = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"HF_TOKEN": "aGZf"},
              "metadata": {"name": "lightrail-hf-token", "namespace": "lightrail", "resourceVersion": "7",
                           "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}}}
    asked = []

    class Getting:
        def get(self, name, namespace, **kw):
            asked.append((name, namespace))
            return type("Result", (), {"to_dict": lambda self: copy.deepcopy(answer)})()

    monkeypatch.setattr(cluster, "_resource", lambda api_version, kind: Getting())
    secret = cluster.get("v1", "Secret", "lightrail-hf-token", "lightrail")
    assert asked == [("lightrail-hf-token", "lightrail")]
    assert secret == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
        "name": "lightrail-hf-token", "namespace": "lightrail", "resourceVersion": "7", "annotations": {}}}
    assert PLANTED not in repr(secret) and "aGZf" not in repr(secret)
