"""`invoke smoke` against a real vLLM (and a real body router for multimodel)."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lightrail.settings import ROOT
from lightrail.smoke import checks
from lightrail.testing.bodyrouter import BodyRouter
from lightrail.testing.vllm import free_port
from tests.conftest import PHI, QWEN


def smoke(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "invoke", "smoke", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, COLUMNS="200"))
    return proc


def smoke_json(*args):
    proc = smoke(*args, "--json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None, proc


def by_name(report):
    return {c["name"]: c for c in report["checks"]}


@pytest.mark.vllm
def test_baseline_passes_every_check(vllm_server):
    code, report, proc = smoke_json("--pattern=baseline", f"--url={vllm_server.url}")
    assert code == 0, proc.stdout + proc.stderr
    names = by_name(report)
    for name in ("models listed", f"completion {QWEN}", f"chat {QWEN}", f"stream {QWEN}", "unknown model is refused"):
        assert names[name]["ok"], names[name]
    stream = names[f"stream {QWEN}"]
    assert stream["data"]["chunks"] > 0 and stream["data"]["ttft_ms"] > 0


@pytest.mark.vllm
def test_caching_makes_the_prefix_cache_hit_counter_rise(vllm_server):
    code, report, proc = smoke_json("--pattern=caching", f"--url={vllm_server.url}")
    assert code == 0, proc.stdout + proc.stderr
    prefix = by_name(report)["prefix cache hits"]
    assert prefix["ok"] and prefix["data"]["hits"] > 0 and 0 < prefix["data"]["hit_rate_pct"] <= 100
    assert "informational" not in prefix["detail"]


@pytest.mark.vllm
def test_multimodel_routes_every_request_to_the_model_it_named(vllm_multimodel):
    code, report, proc = smoke_json("--pattern=multimodel", f"--url={vllm_multimodel.url}",
                                    *[f"--metrics-url={u}" for u in vllm_multimodel.metrics_urls])
    assert code == 0, proc.stdout + proc.stderr
    routing = by_name(report)["routing by model name"]
    assert routing["data"] == {"accuracy_pct": 100.0, "requests": 12}
    assert by_name(report)[f"chat {PHI}"]["ok"]


@pytest.mark.vllm
def test_a_pattern_the_deployment_does_not_run_fails_by_name(vllm_server):
    code, report, proc = smoke_json("--pattern=multimodel", f"--url={vllm_server.url}")
    assert code == 1
    listed = by_name(report)["models listed"]
    assert not listed["ok"] and listed["detail"] == f"missing: {PHI}" and listed["got"] == QWEN
    table = smoke("--pattern=multimodel", f"--url={vllm_server.url}")
    assert table.returncode == 1 and "FAIL" in table.stdout and "(missing:" in table.stdout
    assert "got HTTP 404" in table.stdout and "1 failed" not in table.stdout


@pytest.mark.vllm
def test_a_model_the_server_does_not_serve_fails(vllm_server):
    code, report, _ = smoke_json("--pattern=baseline", "--model=meta-llama/Llama-3.1-8B-Instruct",
                                 f"--url={vllm_server.url}")
    assert code == 1
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert "models listed" in failed and "completion meta-llama/Llama-3.1-8B-Instruct" in failed
    assert by_name(report)["unknown model is refused"]["got"] == "HTTP 404"


@pytest.mark.vllm
def test_endpoint_that_stops_mid_way_fails_then_is_reported_unreachable(vllm_server):
    router = BodyRouter({QWEN: vllm_server.url}).start()
    with httpx.Client(base_url=router.url, timeout=10) as client:
        checks.warm_up(client, timeout=10)
        assert checks.completion(client, QWEN).ok
        router.stop()                               # the gateway goes away between two checks
        after = checks.completion(client, QWEN)
    assert not after.ok and after.got == "no response" and "connection refused" in after.detail
    start = time.monotonic()
    proc = smoke("--pattern=baseline", f"--url={router.url}", "--timeout=3")
    assert proc.returncode == 1 and time.monotonic() - start < 30
    assert proc.stderr.strip() == (f"error: {router.url} did not answer within 3 s: "
                                   "connection refused or host unreachable")


def test_nothing_listening_fails_within_the_timeout():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    proc = smoke("--pattern=baseline", f"--url={url}", "--timeout=2")
    assert proc.returncode == 1 and time.monotonic() - start < 30
    assert "did not answer within 2 s: connection refused" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "127.0.0.1:8000", "http://"])
def test_a_url_that_is_not_http_is_refused(url):
    proc = smoke("--pattern=baseline", f"--url={url}", "--timeout=2")
    assert proc.returncode == 1 and "is not an HTTP URL" in proc.stderr


def test_a_server_that_does_not_speak_http_is_named():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def garbage():
        for _ in range(50):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            conn.settimeout(1)
            try:
                conn.recv(4096)          # let the client finish sending, like a real SSH server
            except OSError:
                pass
            conn.close()

    threading.Thread(target=garbage, daemon=True).start()
    proc = smoke("--pattern=baseline", f"--url=http://127.0.0.1:{port}", "--timeout=2")
    listener.close()
    assert proc.returncode == 1 and "did not answer within 2 s: not an HTTP server" in proc.stderr


def test_unknown_pattern_is_refused_before_any_request():
    proc = smoke("--pattern=fancy", "--url=http://127.0.0.1:9")
    assert proc.returncode == 1 and proc.stderr.strip() == \
        "error: unknown pattern 'fancy'; valid: baseline, multimodel, caching, moe"
