"""A throwaway local control plane for tests: the same kwokctl steps `invoke up --engine=kwok` runs,
with its kubeconfig and kwok work directory in a temporary folder so a developer's own clusters
and ~/.kube/config are never touched.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from lightrail import tools
from lightrail.errors import LightrailError
from lightrail.ops import kwok


class LocalCluster:
    def __init__(self, name: str, workdir: Path):
        self.name, self.workdir = name, Path(workdir)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KWOK_WORKDIR": str(self.workdir / "kwok")}

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
        for _ in range(2):
            tools.run("kwokctl", "stop", "cluster", "--name", self.name, env=env, timeout=120)
            # `kwokctl stop` signals the components and returns; an API server still draining its
            # watches holds its port, and a new one exits with "address already in use" (seen in CI)
            deadline = time.monotonic() + 60
            while (left := self.components()) and time.monotonic() < deadline:
                time.sleep(0.5)
            if left:
                raise AssertionError(f"cluster {self.name} did not stop within 60 s: {left}")
            try:
                tools.run("kwokctl", "start", "cluster", "--name", self.name, "--wait=60s", env=env, timeout=120)
            except LightrailError:     # it waits for an API server that exited: stop and start again
                continue
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0:
                    return
                time.sleep(1)
        raise AssertionError(f"the API server of cluster {self.name} is not ready after two restarts: "
                             f"{self.components()}")

    def components(self) -> list[str]:
        """The cluster's own control-plane processes still running (etcd, API server, ..., kwok)."""
        names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")
        return [cmd for cmd in self.processes() if Path(cmd.split(" ", 1)[0]).name in names]

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
        here) leaves new pods Pending for as long as a test needs a deploy to be still waiting."""
        pids = [pid for pid, cmd in self._processes() if Path(cmd.split(" ", 1)[0]).name == component]
        if not pids:
            raise AssertionError(f"no {component} runs in cluster {self.name}: {self.components()}")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

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
