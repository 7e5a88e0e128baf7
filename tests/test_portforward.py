"""No port-forward survives Ctrl-C or SIGTERM.

The subject is our own process handling, so `kubectl port-forward` is stood in for by a script
that announces a port and serves until killed: the local control plane's kwok nodes have no
kubelet to stream a real port-forward from (a real kubectl against a real API server is run by
tests/test_discovery.py, up to the point where the stream would start).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

FAKE_KUBECTL = textwrap.dedent("""\
    #!/usr/bin/env python3
    # stands in for `kubectl port-forward`: announce a port, then serve until killed
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
