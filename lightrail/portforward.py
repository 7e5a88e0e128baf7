"""A `kubectl port-forward` that is always stopped: on success, on error and on Ctrl-C."""
from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from contextlib import contextmanager

from lightrail.errors import LightrailError
from lightrail.tools import binary, tool_env


def _pump(stream, lines: queue.Queue) -> None:
    """Read kubectl's output for as long as it runs (a full pipe would block it), then None."""
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def port_forward(target: str, port: int, *, namespace: str, kube_context: str | None = None, timeout: float = 20):
    """Yield http://127.0.0.1:<local> forwarded to `target` (e.g. svc/name) port `port`."""
    argv = [binary("kubectl"), "port-forward", target, f":{port}", "--address=127.0.0.1", "-n", namespace]
    if kube_context:
        argv.append(f"--context={kube_context}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tool_env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                said = output[-1] if output else f"exit code {proc.wait()}"   # kubectl's own error is last
                raise LightrailError(f"kubectl port-forward {target} failed: {said}")
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                yield f"http://127.0.0.1:{match.group(1)}"
                return
            if line.strip():
                output.append(line.strip())
        raise LightrailError(f"kubectl port-forward {target} did not start within {timeout:g} s"
                             + (f": {output[-1]}" if output else ""))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
