"""A `kubectl port-forward` that is always stopped: on success, on error and on Ctrl-C."""
from __future__ import annotations

import re
import subprocess
import time
from contextlib import contextmanager

from lightrail.errors import LightrailError
from lightrail.tools import binary, tool_env


@contextmanager
def port_forward(target: str, port: int, *, namespace: str, kube_context: str | None = None, timeout: float = 20):
    """Yield http://127.0.0.1:<local> forwarded to `target` (e.g. svc/name) port `port`."""
    argv = [binary("kubectl"), "port-forward", target, f":{port}", "--address=127.0.0.1", "-n", namespace]
    if kube_context:
        argv.append(f"--context={kube_context}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tool_env())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line or "")
            if match:
                yield f"http://127.0.0.1:{match.group(1)}"
                return
            if proc.poll() is not None:
                raise LightrailError(f"kubectl port-forward {target} failed: {(line + proc.stdout.read()).strip()}")
        raise LightrailError(f"kubectl port-forward {target} did not start within {timeout:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
