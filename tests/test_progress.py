"""Progress of long waits (lightrail.cli.output.progress), as users see it: plain lines on stderr when
piped, a live line on a terminal. Real processes, real pipes and a real pseudo-terminal."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from lightrail.settings import ROOT
from tests.test_smoke import serving

# A wait of ~3 s as teardown's for its last object (same label and detail), with the CLI's progress,
# in a process of its own. (The flows' own waits run on the real control plane in tests/e2e.)
TEARDOWN = """
import time
from lightrail.cli.output import progress
with progress("waiting for the removed objects to be gone") as update:
    end = time.monotonic() + 3.2
    while time.monotonic() < end:
        update("1 left, e.g. LLMInferenceService lightrail/baseline-qwen2-5-3b-instruct")
        time.sleep(0.1)
print("verified: no Lightrail object of every Lightrail deployment is left")
"""
LABEL = "waiting for the removed objects to be gone"


def run_piped(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def run_on_a_terminal(code: str) -> str:
    """Run with stdout and stderr on a pseudo-terminal; everything it wrote, escape sequences included."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=follower, stderr=follower,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:   # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode()


def test_a_long_teardown_wait_prints_plain_progress_lines_on_stderr_when_piped():
    proc = run_piped(TEARDOWN)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines, "no progress was shown for a 3 s wait"
    assert all(re.fullmatch(rf"{LABEL}: [23] s \(1 left, e\.g\. LLMInferenceService lightrail/baseline-\S+\)", line)
               for line in lines), lines
    assert len(lines) == 1   # the detail did not change and 10 s did not pass: one line, not one per tick
    assert "\x1b" not in proc.stderr + proc.stdout
    assert LABEL not in proc.stdout and "verified: no Lightrail object" in proc.stdout


def test_a_short_wait_shows_no_progress():
    proc = run_piped(TEARDOWN.replace("3.2", "0.5"))
    assert proc.returncode == 0 and proc.stderr == ""


def test_on_a_terminal_the_progress_is_one_live_line_that_goes_away():
    screen = run_on_a_terminal(TEARDOWN)
    assert f"{LABEL}: 2 s (1 left" in screen
    assert "\x1b[2K" in screen and "\x1b[?25l" in screen   # rewritten in place, cursor hidden while live
    lines = screen.split("\r\n")
    assert not any(line.startswith(f"{LABEL}: ") for line in lines)   # never a line of its own
    assert "verified: no Lightrail object" in screen


def test_smoke_waiting_for_an_endpoint_that_is_starting_shows_progress_when_piped():
    import http.server

    class Starting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Starting) as url:
        proc = subprocess.run([sys.executable, "-m", "invoke", "smoke", "--pattern=baseline", f"--url={url}",
                               "--timeout=4"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    # The lines give the wait's own clock: it ended at the 4-s timeout (a longer wait would show 10 s, 20 s, ...).
    # No wall-clock bound on the whole process: a loaded CI machine took 35 s to start and stop it.
    shown = [line for line in proc.stderr.splitlines() if line.startswith(f"waiting for {url}: ")]
    assert shown and all(re.fullmatch(rf"waiting for {re.escape(url)}: [234] s \(.*HTTP 503.*\)", s) for s in shown), \
        proc.stderr
    assert "\x1b" not in proc.stderr


def test_reaching_a_cluster_that_does_not_answer_shows_progress_when_piped(tmp_path):
    """A server that takes TCP connections and drops them 1.5 s later (what a stuck API server looks like)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def drop_later():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Timer(1.5, conn.close).start()

    threading.Thread(target=drop_later, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: one, cluster: {{server: "https://127.0.0.1:{listener.getsockname()[1]}"}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: stuck, context: {{cluster: one, user: u}}}}]
current-context: stuck
""")
    try:
        proc = subprocess.run([sys.executable, "-m", "invoke", "status"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    finally:
        listener.close()
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("error: cluster of context 'stuck' is not reachable")
    assert lines[0] == "reaching the cluster of context stuck: 2 s", lines
    assert all(re.fullmatch(r"reaching the cluster of context stuck: \d+ s", line) for line in lines[:-1]), lines
