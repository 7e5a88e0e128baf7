"""`invoke teardown` against the real API server: real deletion (finalizers, garbage collection of
owned objects, PVC protection), label selection across namespaces, --keep-pvcs, --dry-run. Plain
labelled objects stand in for a deployment — teardown finds what to remove by labels alone — so
no controller has to run and the test takes seconds."""
from __future__ import annotations

import json
import re

from tests.e2e.conftest import invoke

LABELS = {"app.kubernetes.io/managed-by": "lightrail", "lightrail.dev/stack": "kserve"}


def labelled(kind: str, name: str, namespace: str, pattern: str = "baseline", **metadata) -> dict:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {
        "name": name, "namespace": namespace, "labels": {**LABELS, "lightrail.dev/pattern": pattern}, **metadata}}
    if kind == "PersistentVolumeClaim":
        obj["spec"] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    return obj


def apply(cluster, *objects: dict) -> list[dict]:
    out = cluster.kubectl("apply", "--server-side", "-o", "json", "-f", "-",
                          stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})).stdout
    answer = json.loads(out)
    return answer.get("items", [answer])   # kubectl prints one object as itself


def names(cluster, namespace: str) -> list[str]:
    return cluster.kubectl("get", "configmaps,persistentvolumeclaims", "-n", namespace, "-l", "lightrail.dev/stack",
                           "-o", "name").stdout.split()


def test_teardown_waits_for_garbage_collection_and_names_what_a_finalizer_holds(cluster):
    """The owned child is not deleted by teardown (mutant M7's subject): the real garbage collector
    removes it after its owner. An object a finalizer holds is named when the timeout runs out."""
    ns = "e2e-teardown-held"
    cluster.kubectl("create", "namespace", ns)
    (parent,) = apply(cluster, labelled("ConfigMap", "parent", ns))
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent["metadata"]["uid"],
             "controller": True}
    apply(cluster, labelled("ConfigMap", "child", ns, ownerReferences=[owner]),
          labelled("ConfigMap", "held", ns, finalizers=["lightrail.dev/e2e-hold"]),
          labelled("ConfigMap", "other-pattern", ns, pattern="caching"))

    dry = invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={ns}", "--dry-run")
    assert "[1] delete 2 labelled object(s)" in dry.stdout, dry.stdout
    sent = re.findall(r"^ +name: (\S+)$", dry.stdout, re.M)   # the stubs the delete reads on stdin
    assert sorted(sent) == ["held", "parent"], dry.stdout       # the child goes with its owner
    assert len(names(cluster, ns)) == 4

    held = invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={ns}", "--timeout=5", ok=False)
    assert held.returncode == 1, held.stdout + held.stderr
    assert f"ConfigMap {ns}/held" in held.stderr and "finalizers" in held.stderr, held.stdout + held.stderr
    assert names(cluster, ns) == ["configmap/held", "configmap/other-pattern"]   # child went with its owner

    cluster.kubectl("patch", "configmap", "held", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    again = invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={ns}")
    assert "nothing to remove: no Lightrail objects of pattern baseline in namespace " + ns in again.stdout, again.stdout
    assert names(cluster, ns) == ["configmap/other-pattern"]


def test_teardown_keeps_pvcs_when_asked_and_leaves_other_namespaces_alone(cluster):
    ns, elsewhere = "e2e-teardown-pvc", "e2e-teardown-elsewhere"
    for name in (ns, elsewhere):
        cluster.kubectl("create", "namespace", name)
    apply(cluster, labelled("PersistentVolumeClaim", "weights", ns), labelled("ConfigMap", "config", ns),
          labelled("ConfigMap", "config", elsewhere))
    kept = invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={ns}", "--keep-pvcs")
    assert f"kept: PersistentVolumeClaim {ns}/weights (--keep-pvcs)" in kept.stdout, kept.stdout
    assert f"verified: no Lightrail object of pattern baseline is left in {ns}" in kept.stdout
    assert names(cluster, ns) == ["persistentvolumeclaim/weights"]
    assert names(cluster, elsewhere) == ["configmap/config"]
    invoke(cluster, "teardown", "--pattern=baseline", f"--namespace={ns}", "--no-keep-pvcs")   # PVC protection lets it go: unused
    assert names(cluster, ns) == []
