"""A throwaway local control plane for tests: the same kwokctl steps `invoke up --engine=kwok` runs,
with its kubeconfig and kwok work directory in a temporary folder so a developer's own clusters
and ~/.kube/config are never touched.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import yaml

from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.ops import kwok

# the processes of a cluster, by binary name
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")


class LocalCluster:
    def __init__(self, name: str, workdir: Path):
        self.name, self.workdir = name, Path(workdir)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KWOK_WORKDIR": str(self.workdir / "kwok")}
        self._frozen: set[int] = set()

    @property
    def context(self) -> str:
        return kwok.context(self.name)

    def _kwokctl(self, step) -> str:
        return kwok.run(step.args, step.timeout, env={"KWOK_WORKDIR": self.env["KWOK_WORKDIR"]})

    def start(self) -> "LocalCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._kwokctl(kwok.create_step(self.name, str(self.kubeconfig)))
        return self

    def stop(self) -> None:
        self._kwokctl(kwok.delete_step(self.name, str(self.kubeconfig)))

    def restart(self) -> None:
        """Stop every component (etcd keeps its data) and start them again: an API server restart."""
        env = {**kwok.kwokctl_env(), "KWOK_WORKDIR": self.env["KWOK_WORKDIR"]}
        for pid in self._frozen:   # a stopped process never acts on kwokctl's SIGTERM; its successor runs
            os.kill(pid, signal.SIGKILL)
        self._frozen.clear()
        port = self._api_port()
        with kwok.ports_lock():   # no other cluster takes the ports this one frees for a moment
            for _ in range(2):
                tools.run("kwokctl", "stop", "cluster", "--name", self.name, env=env, timeout=120)
                # `kwokctl stop` signals the components and returns; an exiting API server holds its port a
                # moment after its command line is gone, and a new one exits with "address already in use" (then
                # `kwokctl start` waits for it until the timeout below: restarts of 126 s, measured in the suite)
                deadline = time.monotonic() + 60
                while (busy := self.components() or not _bindable(port)) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if busy:
                    raise AssertionError(f"cluster {self.name} did not stop within 60 s: {self.components()}, "
                                         f"port {port} {'free' if _bindable(port) else 'in use'}")
                try:
                    tools.run("kwokctl", "start", "cluster", "--name", self.name, "--wait=60s", env=env, timeout=120)
                except LightrailError:     # it waits for an API server that exited: stop and start again
                    continue
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if self.kubectl("get", "--raw", "/healthz", check=False).returncode == 0:
                        self._start_exited(env)
                        return
                    time.sleep(1)
            raise AssertionError(f"the API server of cluster {self.name} is not ready after two restarts: "
                                 f"{self.components()}")

    def _start_exited(self, env: dict[str, str]) -> None:
        """The controller-manager gives the API server 10 s to report healthy, then exits for good (seen after a
        restart on a loaded machine: the RBAC bootstrap-roles hook took longer, and no Deployment got a
        ReplicaSet after it). With /healthz ok, `kwokctl start` starts the components not running (it skips
        the running ones)."""
        for starts in range(4):
            time.sleep(2)    # one still in its wait sees /healthz ok within a second
            missing = sorted(set(PROCESSES) - {Path(cmd.split(" ", 1)[0]).name for cmd in self.components()})
            if not missing:
                return
            if starts < 3:
                tools.run("kwokctl", "start", "cluster", "--name", self.name, "--wait=60s", env=env, timeout=120)
        raise AssertionError(f"cluster {self.name}: {', '.join(missing)} not running after a restart and three "
                             f"more starts: {self.components()}")

    def _api_port(self) -> int:
        config = yaml.safe_load(self.kubeconfig.read_text())
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == self.context)
        return urlparse(next(c["cluster"]["server"] for c in config["clusters"] if c["name"] == ctx["cluster"])).port

    def components(self) -> list[str]:
        """The cluster's own control-plane processes still running (etcd, API server, ..., kwok)."""
        return [cmd for cmd in self.processes() if Path(cmd.split(" ", 1)[0]).name in PROCESSES]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        from lightrail.settings import TOOLS_BIN

        proc = subprocess.run([str(TOOLS_BIN / "kubectl"), f"--context={self.context}", *args], env=self.env,
                              input=stdin, capture_output=True, text=True, timeout=300)
        if check and proc.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    @contextlib.contextmanager
    def frozen(self, component: str):
        """One component stopped (SIGSTOP) until the block ends: a frozen kube-scheduler (no leader election
        here) leaves new pods Pending for as long as a test needs a deploy to be still waiting. A restart
        within the block ends the freeze: the component it starts runs."""
        pids = {pid for pid, cmd in self._processes() if Path(cmd.split(" ", 1)[0]).name == component}
        if not pids:
            raise AssertionError(f"no {component} runs in cluster {self.name}: {self.components()}")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self._frozen |= pids
        try:
            yield
        finally:
            for pid in pids & self._frozen:
                os.kill(pid, signal.SIGCONT)
            self._frozen -= pids

    def processes(self) -> list[str]:
        """Command lines of processes still running from this cluster's work directory."""
        return [cmd for _, cmd in self._processes()]

    def _processes(self) -> list[tuple[int, str]]:
        mark = str(self.workdir)
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if mark in cmd:
                found.append((int(proc.name), cmd.strip()))
        return found

    def wait_gone(self, seconds: float = 20) -> list[str]:
        deadline = time.monotonic() + seconds
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left


def _bindable(port: int) -> bool:
    """Nothing holds the port any more: it binds and listens as the API server (Go) does, dual-stack with
    SO_REUSEADDR."""
    v6 = socket.has_ipv6
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind(("::" if v6 else "0.0.0.0", port))
            sock.listen()
        except OSError:
            return False
    return True
