"""`invoke up --engine=kwok`: a real control plane on this machine, with simulated nodes and pods.

kwokctl runs a real kube-apiserver, etcd, kube-controller-manager and kube-scheduler as local
processes (the binaries scripts/setup builds from pinned Go modules, linked in .tools/bin), plus
the kwok controller, which plays the kubelet: nodes stay Ready and scheduled pods become Running
and Ready. Nodes are shaped from the catalog (`nodes:` of each accelerator) with the labels,
capacity and taints GKE gives such nodes, so the real scheduler decides where pods fit.

Pure here: the node spec parser, the Node objects and the steps; `run` is the only call out.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lightrail import tools
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.ops.steps import Step
from lightrail.settings import TOOLS_BIN

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok")
MANAGED = {"kwok.x-k8s.io/node": "fake"}     # the annotation kwokctl's kwok controller manages nodes by
DEFAULT_NODES = "cpu:2"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class NodeGroup:
    accel: str          # cpu | gpu | tpu
    type: str           # "default", a GPU type, or v6e-<topology>
    count: int          # nodes (cpu, gpu) or slices (tpu)


def context(name: str) -> str:
    return f"kwok-{name}"


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise LightrailError(f"invalid cluster name {name!r}; valid: lowercase letters, digits and '-', "
                             "1-40 characters, starting and ending with a letter or digit")


def parse_nodes(spec: str) -> list[NodeGroup]:
    """`cpu:4,tpu:v6e-2x4:2,gpu:h100:2` -> node groups, every part checked against the catalog."""
    accels = load_catalog().accelerators
    shaped = [a for a in accels if "nodes" in accels[a]]
    usage = "cpu:COUNT, gpu:TYPE:COUNT or tpu:v6e-TOPOLOGY:SLICES"
    groups = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        accel = parts[0]
        if accel not in shaped:
            raise LightrailError(f"--nodes: unknown node kind {accel!r} in {item!r}; valid: {', '.join(shaped)}")
        want = 2 if accel == "cpu" else 3
        if len(parts) != want:
            raise LightrailError(f"--nodes: {item!r} is not {usage}")
        kind = "default" if accel == "cpu" else parts[1]
        valid = _types(accel, accels[accel])
        if kind not in valid:
            raise LightrailError(f"--nodes: unknown {accel} type {kind!r}; valid: {', '.join(valid)}")
        if not parts[-1].isdigit() or not 1 <= int(parts[-1]) <= 100:
            raise LightrailError(f"--nodes: count {parts[-1]!r} in {item!r}; valid: a whole number from 1 to 100")
        groups.append(NodeGroup(accel, kind, int(parts[-1])))
    if not groups:
        raise LightrailError(f"--nodes is empty; valid: a comma-separated list of {usage}")
    return groups


def _types(accel: str, data) -> list[str]:
    if accel == "tpu":
        return [f"v6e-{t}" for t in data["topologies"]]
    return [t for t in data["nodes"] if t != "taints"]


def node_objects(groups: list[NodeGroup]) -> list[dict]:
    """Node objects for kwok to manage: GKE's labels, capacity and taints for each shape."""
    accels = load_catalog().accelerators
    nodes = []
    for group in groups:
        data = accels[group.accel]
        labels: dict[str, str] = {"type": "kwok"}
        extra: dict[str, str] = {}
        hosts = 1
        if group.accel == "gpu":
            shape = data["nodes"][group.type]
            labels[data["node_selector_key"]] = data["types"][group.type]["node_label"]
            extra[data["resource"]] = str(shape["per_node"])
        elif group.accel == "tpu":
            topology = group.type.removeprefix("v6e-")
            topo = data["topologies"][topology]
            hosts = int(topo["hosts"])
            chips = int(topo["chips"]) // hosts
            shape = data["nodes"][chips]
            labels.update(data["node_selector"])
            labels[data["topology_key"]] = topology
            extra[data["resource"]] = str(chips)
        else:
            shape = data["nodes"][group.type]
        labels["node.kubernetes.io/instance-type"] = shape["machine"]
        capacity = {"cpu": str(shape["cpu"]), "memory": str(shape["memory"]), "pods": "110", **extra}
        for index in range(group.count):
            for host in range(hosts):
                name = f"kwok-{group.accel}-{group.type}-{index}" + (f"-{host}" if hosts > 1 else "")
                nodes.append(_node(name.replace(".", "-"), labels, capacity, data["nodes"].get("taints") or ()))
    return nodes


def _node(name: str, labels: dict, capacity: dict, taints) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": dict(MANAGED),
                     "labels": {**labels, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64"}},
        "spec": {"taints": [dict(t) for t in taints]} if taints else {},
        "status": {"capacity": dict(capacity), "allocatable": dict(capacity)},
    }


# ---------------------------------------------------------------------------------------------
# Steps


def binaries() -> dict[str, Path]:
    """The locally built control-plane binaries kwokctl is pointed at (never its downloads)."""
    return {c: TOOLS_BIN / c for c in COMPONENTS}


def missing_binaries() -> list[str]:
    return [name for name, path in binaries().items() if not path.exists()]


def create_step(name: str, kubeconfig: str | None = None) -> Step:
    version = load_catalog().versions["control-plane"]["kubernetes"]["version"]
    paths = binaries()
    args = ("create", "cluster", "--name", name, "--runtime", "binary", "--wait", "120s",
            f"--kubeconfig={kubeconfig or kubeconfig_path()}",
            f"--kube-apiserver-binary={paths['kube-apiserver']}",
            f"--kube-controller-manager-binary={paths['kube-controller-manager']}",
            f"--kube-scheduler-binary={paths['kube-scheduler']}",
            f"--etcd-binary={paths['etcd']}", f"--kwok-controller-binary={paths['kwok']}",
            # one instance each: leader election only makes them exit when a busy machine renews a lease late
            # (seen: "leaderelection lost" under load, and then no ReplicaSet is ever created)
            "--extra-args=kube-controller-manager=leader-elect=false", "--extra-args=kube-scheduler=leader-elect=false",
            # node leases of 40 s (kwokctl multiplies this by its heartbeat factor, 5), not 200: a kwok
            # controller started again (`kwokctl start` after a stop) waits for its predecessor's leases to
            # expire before it runs any pod - 200 s during which nothing starts or terminates
            "--node-lease-duration-seconds=8")
    return Step(f"create kwok cluster {name} (Kubernetes {version}, local binaries) unless it exists",
                tool="kwokctl", args=args, timeout=180)


def delete_step(name: str, kubeconfig: str | None = None) -> Step:
    kubeconfig = kubeconfig or kubeconfig_path()
    return Step(f"delete kwok cluster {name} (its processes and files; its context in {kubeconfig})",
                tool="kwokctl", args=("delete", "cluster", "--name", name, f"--kubeconfig={kubeconfig}"), timeout=120)


def controller_step(name: str, controller: str = "istio") -> Step:
    return Step(f"start {controller} as a local process of kwok cluster {name} (the gateway controller)",
                action="controller", args=(name, controller), timeout=180)


def cluster_dir(name: str) -> Path:
    """Where kwokctl keeps a cluster's files ($KWOK_WORKDIR, default ~/.kwok); `kwokctl delete` removes it."""
    return Path(os.environ.get("KWOK_WORKDIR") or Path.home() / ".kwok") / "clusters" / name


def start_controller(name: str, controller: str) -> str:
    """Start a built upstream controller against the cluster, detached, its pid kept beside the cluster's
    own (stop_controllers ends it before the cluster goes). Not built: say so; deploys then stop at doctor."""
    from lightrail.ops import controllers

    try:
        controllers.installed(controller)
    except LightrailError as err:
        return f"not started: {err} ({err.fix})"
    workdir = cluster_dir(name) / "lightrail" / controller
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(tools.run("kwokctl", "get", "kubeconfig", "--name", name, env=kwokctl_env()).stdout)
    pid = controllers.start_detached(controller, kubeconfig, workdir)
    (workdir / "pid").write_text(str(pid))
    return f"{controller} running (pid {pid}, log {workdir}/)"


def stop_controllers(name: str) -> list[str]:
    """End the controllers start_controller left running for this cluster."""
    stopped = []
    for pidfile in sorted((cluster_dir(name) / "lightrail").glob("*/pid")):
        pid = int(pidfile.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pidfile.parent.name)
        except ProcessLookupError:
            pass
        pidfile.unlink()
    return stopped


def kubeconfig_path() -> str:
    """Where the cluster's context goes: the first file of $KUBECONFIG, as kubectl writes, else ~/.kube/config."""
    first = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
    return first or str(Path.home() / ".kube" / "config")


def clusters(env: dict[str, str] | None = None) -> list[str]:
    return tools.run("kwokctl", "get", "clusters", timeout=60, env=kwokctl_env(env)).stdout.split()


@contextlib.contextmanager
def ports_lock():
    """Held while kwokctl creates or (re)starts a cluster. kwokctl gives each component the first free port
    counting down from 32767, each kwokctl process on its own, so two clusters created at once were given
    the same ports (seen with two test runs at once: objects applied to one were then not found in it).
    One such kwokctl at a time on this machine; a cluster's components hold their ports once it is up."""
    fd = os.open(Path(tempfile.gettempdir()) / "lightrail-kwokctl-ports.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run(args: tuple[str, ...], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run kwokctl; creating a cluster that exists is a no-op, deleting one that does not is too.
    env: e.g. KWOK_WORKDIR, where kwokctl keeps the clusters' files (default ~/.kwok)."""
    name = args[args.index("--name") + 1]
    if args[:2] == ("create", "cluster") and name in clusters(env):
        return f"kwok cluster {name} exists"
    if args[:2] == ("delete", "cluster"):
        if name not in clusters(env):
            return f"no kwok cluster {name}"
        stop_controllers(name)
    with ports_lock() if args[0] in ("create", "start") else contextlib.nullcontext():
        proc = tools.run("kwokctl", *args, timeout=timeout, env=kwokctl_env(env), check=False)
    text = _messages(proc.stderr + proc.stdout)
    if proc.returncode != 0:
        raise LightrailError(f"kwokctl {' '.join(args[:2])} failed: {text.strip()[-800:]}")
    return text


def _messages(text: str) -> str:
    """kwokctl logs JSON lines when not on a terminal: keep each line's message (and elapsed time)."""
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        elapsed = (entry.get("elapsed") or {}).get("human")
        extra = " ".join(f"{k}={v}" for k, v in entry.items() if k in ("err", "component"))
        out.append(" ".join(x for x in (entry.get("msg", line), f"({elapsed})" if elapsed else "", extra) if x))
    return "\n".join(out)


def kwokctl_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """kwokctl renders each component's flags for this Kubernetes version."""
    return {"KWOK_KUBE_VERSION": load_catalog().versions["control-plane"]["kubernetes"]["version"], **(extra or {})}
