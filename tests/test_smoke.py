"""`invoke smoke` against a real vLLM (and a real body router for multimodel)."""
import contextlib
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lightrail.errors import LightrailError
from lightrail.settings import ROOT
from lightrail.smoke import checks, metrics
from lightrail.testing.bodyrouter import BodyRouter
from lightrail.testing.vllm import VLLMServer, free_port
from tests.conftest import PHI, QWEN


def smoke(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "invoke", "smoke", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, COLUMNS="200"))
    return proc


def smoke_json(*args):
    proc = smoke(*args, "--output=json")
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
    assert (report["url"], report["pattern"], report["models"], report["ok"]) == (vllm_server.url, "baseline", [QWEN],
                                                                                  True)
    for name in (f"completion {QWEN}", f"chat {QWEN}"):   # vLLM honoured max_tokens (its default: the whole context)
        assert 0 < int(names[name]["detail"].removesuffix(" tokens")) <= checks.MAX_TOKENS, names[name]
    # no --metrics-url: the endpoint's own /metrics (vLLM's) is read, and outside caching the prefix check
    # only informs: reported, marked, never failing the run
    assert list(names) == ["warm-up", "models listed", f"completion {QWEN}", f"chat {QWEN}", f"stream {QWEN}",
                           "prefix cache hits", "unknown model is refused"]
    assert names["prefix cache hits"]["ok"] and names["prefix cache hits"]["detail"].endswith(" (informational)")


@pytest.mark.vllm
def test_without_metrics_to_read_the_informational_prefix_check_is_left_out(vllm_server):
    """What `invoke smoke` runs for a discovered baseline (no metrics URL): every check but the prefix
    cache's, which has nothing to read; the report passes."""
    report = checks.run(vllm_server.url, "baseline", [QWEN], metrics_urls=[], timeout=60)
    assert [(c.name, c.ok) for c in report.checks] == [
        ("warm-up", True), ("models listed", True), (f"completion {QWEN}", True), (f"chat {QWEN}", True),
        (f"stream {QWEN}", True), ("unknown model is refused", True)], report.checks
    assert report.ok and report.checks[0].detail == "first answer"


@pytest.mark.vllm
def test_caching_makes_the_prefix_cache_hit_counter_rise(vllm_server):
    code, report, proc = smoke_json("--pattern=caching", f"--url={vllm_server.url}/v1/")   # an OpenAI-style base URL
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
        rest = [checks.models_listed(client, [QWEN]), checks.chat(client, QWEN), checks.streaming(client, QWEN),
                checks.routing(client, [QWEN, PHI]), checks.prefix_cache(client, QWEN, [vllm_server.metrics_url]),
                checks.unknown_model(client)]
    assert not after.ok and after.got == "no response" and "connection refused" in after.detail
    for check in rest:                              # every later check fails by name; none crashes smoke
        assert not check.ok and "connection refused" in check.detail + check.got, check
    proc = smoke("--pattern=baseline", f"--url={router.url}", "--timeout=3")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {router.url} did not answer within 3 s: "
                                                    "connection refused (nothing listens on that port)")


def test_a_port_still_refusing_after_the_grace_period_is_the_answer_not_a_wait():
    """A refused connection is retried for REFUSED_GRACE seconds (a port-forward starting), then it is
    the answer, long before a generous timeout."""
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with httpx.Client(base_url=url, timeout=5) as client, pytest.raises(LightrailError) as err:
        checks.warm_up(client, timeout=60)
    assert checks.REFUSED_GRACE <= time.monotonic() - start < 60   # retried for the grace, not the timeout
    assert str(err.value) == f"{url} did not answer: connection refused (nothing listens on that port)"


def test_https_against_a_plain_http_server_fails_at_once_and_says_so():
    """A TLS handshake with a plain-http server fails the same way every time: no waiting for the timeout."""
    connections = []

    class Counted(http.server.BaseHTTPRequestHandler):
        def handle(self):
            connections.append(self.client_address)
            super().handle()

    with serving(Counted) as plain:
        url = plain.replace("http://", "https://")
        with httpx.Client(base_url=url, timeout=5) as client, pytest.raises(LightrailError) as err:
            checks.warm_up(client, timeout=60)
    assert len(connections) == 1   # one handshake, not retried (a clock would be wrong on a loaded machine)
    said = str(err.value)
    assert said.startswith(f"{url} did not answer: TLS handshake failed (") and "SSL" in said, said
    assert said.endswith("); is the server plain http?"), said


def test_an_error_without_a_message_is_named_by_its_type():
    """A failed check's detail is never empty: an exception that carries no text shows its type."""
    assert checks.describe(httpx.WriteError("")) == "WriteError"
    assert checks.describe(ValueError("Expecting value: line 1 column 1 (char 0)")) == \
        "Expecting value: line 1 column 1 (char 0)"


def test_nothing_listening_fails_within_the_timeout():
    url = f"http://127.0.0.1:{free_port()}"
    proc = smoke("--pattern=baseline", f"--url={url}", "--timeout=2", timeout=120)
    assert proc.returncode == 1
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


@contextlib.contextmanager
def serving(handler):
    """A real HTTP server on a free loopback port, quiet, in a thread; its base URL."""
    class Quiet(handler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def http_server(body: bytes, content_type: str, status: int = 200):
    """A real HTTP server answering every GET and POST with `status` and `body` (a web page, a non-vLLM
    /metrics, a server refusing requests)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.do_GET()

    with serving(Handler) as url:
        yield url


def test_a_web_page_is_not_an_openai_api_and_fails_without_waiting():
    with http_server(b"<html><body>Grafana</body></html>", "text/html") as url:
        # not waiting: the process ends (in seconds; 35 s on a loaded CI machine) long before the 600-s timeout
        proc = smoke("--pattern=baseline", f"--url={url}", "--timeout=600", timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "answers HTTP but is not an OpenAI-compatible API" in proc.stderr and "text/html" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prefix_check_says_when_there_is_nothing_to_read_the_counter_from():
    with http_server(b"# TYPE envoy_requests counter\nenvoy_requests_total 7\n", "text/plain") as gateway_metrics, \
            httpx.Client(base_url=gateway_metrics) as client:
        none = checks.prefix_cache(client, QWEN, [])
        not_vllm = checks.prefix_cache(client, QWEN, [f"{gateway_metrics}/metrics"])
    assert not none.ok and none.got == "no metrics URL to read it from" and "--metrics-url" in none.detail
    assert not not_vllm.ok and not_vllm.got.startswith("no vllm:prefix_cache_queries_total at ")


@contextlib.contextmanager
def answering_as(model: str, seen: list | None = None):
    """A real HTTP server that answers every completion and chat request as `model` would: a gateway
    whose route (or a model-name rewrite) sends requests to another model's server. `seen` collects
    (path, request body) of each request."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if seen is not None:
                seen.append((self.path, asked))
            choice = {"index": 0, "finish_reason": "length"}
            choice.update({"message": {"role": "assistant", "content": "Hello there"}} if "messages" in asked
                          else {"text": " jumps over"})
            body = json.dumps({"id": "x", "object": "text_completion", "model": model, "choices": [choice],
                               "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as url:
        yield url


def test_text_from_another_model_fails_the_completion_and_chat_checks():
    """Mutant M8 (the completion check passes whatever model answered): text is not enough, it must
    come from the model the request named."""
    with answering_as(PHI) as url, httpx.Client(base_url=url, timeout=10) as client:
        wrong = [checks.completion(client, QWEN), checks.chat(client, QWEN)]
        right = [checks.completion(client, PHI), checks.chat(client, PHI)]
    for check in wrong:
        assert not check.ok and check.expected == f"text from {QWEN}" and check.got.endswith(f"chars from {PHI}")
    assert all(c.ok for c in right), right


def refusing(status: int, body: bytes, content_type: str = "application/json"):
    """A real HTTP server that refuses every request with `status` and `body`."""
    return http_server(body, content_type, status)


@pytest.mark.parametrize("status, answer, got", [
    (404, {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}},
     "HTTP 404: The model `x` does not exist."),                                          # vLLM / OpenAI
    (503, {"object": "error", "message": "engine overloaded", "code": 503}, "HTTP 503: engine overloaded"),
    (404, {"detail": "Not Found"}, "HTTP 404: Not Found"),                                  # FastAPI's own
    (429, {"error": "rate limited"}, "HTTP 429: rate limited"),
    (400, {"error": "x" * 400}, "HTTP 400: " + "x" * 300),                                 # cut at 300
    (400, {"error": {"type": "BadRequest"}}, "HTTP 400"),
    (400, ["not", "an", "object"], "HTTP 400"),
    (502, b"<html><body>Bad Gateway</body></html>", "HTTP 502"),                            # never a page
])
def test_a_refused_request_shows_the_servers_own_message(status, answer, got):
    body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    kind = "text/html" if isinstance(answer, bytes) else "application/json"
    with refusing(status, body, kind) as url, httpx.Client(base_url=url, timeout=10) as client:
        completion, chat = checks.completion(client, QWEN), checks.chat(client, QWEN)
    for check in (completion, chat):
        assert not check.ok and check.got == got and check.expected == "HTTP 200 with text"


def test_completion_and_chat_send_a_prompt_and_ask_for_a_short_answer():
    """What the checks send: a prompt (chat: a user message with content) and max_tokens, so a smoke run
    costs a few tokens whatever the server's default length (vLLM's: the rest of the context)."""
    seen: list = []
    with answering_as(QWEN, seen) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert checks.completion(client, QWEN).ok and checks.chat(client, QWEN).ok
    (completion_path, completion), (chat_path, chat) = seen
    assert completion_path == "/v1/completions" and completion["model"] == QWEN and completion["prompt"].strip()
    assert chat_path == "/v1/chat/completions" and chat["model"] == QWEN
    assert [m["role"] for m in chat["messages"]] == ["user"] and chat["messages"][0]["content"].strip()
    assert completion["max_tokens"] == chat["max_tokens"] == checks.MAX_TOKENS


@pytest.mark.parametrize("url, shown", [
    ("http://me:hunter2@gw.example.com:8080/v1?api_key=s3cret&model=x",
     "http://***@gw.example.com:8080/v1?api_key=***&model=x"),
    ("https://gw.example.com/?X-Amz-Signature=ab12&Token=t0k&page=2&Auth=z&empty=",
     "https://gw.example.com/?X-Amz-Signature=***&Token=***&page=2&Auth=***&empty="),
    ("http://user@host@gw.example.com/", "http://***@gw.example.com/"),     # the last @ ends the userinfo
    ("http://gw.example.com:8000", "http://gw.example.com:8000"),
    ("http://[::1", "<a URL that cannot be parsed>"),
])
def test_urls_are_shown_without_credentials(url, shown):
    assert checks.mask_url(url) == shown


def test_a_refused_url_is_named_without_its_credentials():
    for url, said in (("ftp://me:hunter2@gw.example.com/?token=s3cret", "is not an HTTP URL"),
                      ("http://me:hunter2@gw.example.com:0/?token=s3cret", "port 0 is not a port"),
                      ("http://me:hunter2@[::1/?token=s3cret", "is not a valid URL")):
        with pytest.raises(LightrailError) as err:
            checks.check_url(url, flag="--gateway")
        assert said in str(err.value) and str(err.value).startswith("--gateway ")
        assert "hunter2" not in str(err.value) and "s3cret" not in str(err.value)


def test_a_url_with_whitespace_is_named_trimmed_and_without_its_credentials():
    with pytest.raises(LightrailError) as err:
        checks.check_url(" http://me:hunter2@gw.example.com/v1?token=s3cret\n", flag="--metrics-url")
    assert str(err.value) == ("--metrics-url 'http://***@gw.example.com/v1?token=***' has whitespace in it; valid: "
                              "http://HOST:PORT or https://HOST, nothing around it")


def test_check_url_takes_an_openai_client_base_url():
    assert checks.check_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert checks.check_url("https://gw.example.com/ns/svc/v1") == "https://gw.example.com/ns/svc"
    assert checks.check_url("http://127.0.0.1:8000/v10") == "http://127.0.0.1:8000/v10"


@pytest.mark.parametrize("value, message", [
    ("1.5", "did not answer within 1.5 s: connection refused"),
    ("soon", "error: --timeout must be a positive number of seconds, got 'soon'"),
    ("-1", "error: --timeout must be a positive number of seconds, got '-1'"),
])
def test_timeout_takes_seconds(value, message):
    proc = smoke("--pattern=baseline", f"--url=http://127.0.0.1:{free_port()}", f"--timeout={value}")
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.vllm
def test_the_body_router_lets_a_client_hang_up_mid_stream(vllm_server, caplog):
    """A client that stops reading (smoke stops at [DONE]) must not make the router fail writing."""
    body = json.dumps({"model": QWEN, "prompt": "Count.", "max_tokens": 32, "stream": True}).encode()
    with BodyRouter({QWEN: vllm_server.url}) as router:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", router.port)) as conn:
                conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                assert conn.recv(4096).startswith(b"HTTP/1.1 200")    # then hang up mid-stream
        time.sleep(1)
        with httpx.Client(base_url=router.url, timeout=30) as client:
            assert checks.streaming(client, QWEN).ok           # the router still serves
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.vllm
def test_a_vllm_that_cannot_start_says_why_and_leaves_nothing_running(tmp_path):
    (tmp_path / "config.json").write_text("{}")                 # a directory that is not a model
    server = VLLMServer(tmp_path, QWEN, startup_timeout=120)
    with pytest.raises(LightrailError, match="vLLM exited with 1 while starting") as err:
        server.start()
    assert "Should have a `model_type` key in its config.json" in str(err.value)   # from the kept log
    assert server.log_path.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)                             # its process group is gone


@pytest.mark.vllm
def test_prefix_check_sizes_the_prefix_from_the_server(vllm_server):
    """The shared prefix is sized by the server's tokenizer and block size: PREFIX_BLOCKS blocks, or as many
    as fit in its context beside a question (the context as the server itself lists it, whoever started it)."""
    with httpx.Client(base_url=vllm_server.url, timeout=60) as client:
        (card,) = client.get("/v1/models").json()["data"]
        context = card["max_model_len"]
        before = metrics.scrape([vllm_server.metrics_url])
        check = checks.prefix_cache(client, QWEN, [vllm_server.metrics_url])
        served = metrics.delta(before, metrics.scrape([vllm_server.metrics_url]))
        too_small = checks.shared_prefix(client, QWEN, context, [vllm_server.metrics_url])   # blocks as big as it
    block, tokens = check.data["block_size"], check.data["prefix_tokens"]
    assert check.ok and check.expected == "vllm:prefix_cache_hits_total rises", check
    # a burst of 8 short completions (2 tokens each) sharing the prefix, nothing else
    assert served[metrics.REQUESTS_OK] == 8 and served[metrics.GENERATION_TOKENS] <= 16, served
    assert checks.MIN_PREFIX_BLOCKS * block <= tokens <= min(checks.PREFIX_BLOCKS * block, context - 64), check
    assert check.data["hits"] > 0 and f"shared prefix {tokens} tokens ({tokens // block} blocks of {block})" in \
        check.detail, check
    assert not too_small.ok and too_small.got == f"max_model_len {context} leaves room for {context - 64} prefix tokens"
    assert too_small.expected == f"a shared prefix of at least 2 KV blocks ({2 * context} tokens)"


@pytest.fixture
def https_vllm(vllm_server, tmp_path):
    """The real vLLM behind an HTTPS front whose certificate no system CA signed."""
    from lightrail.ops.controllers import serving_cert
    from lightrail.testing.tlsfront import TlsFront

    serving_cert(tmp_path / "front")
    serving_cert(tmp_path / "other")     # another private CA: must not be trusted for the front
    with TlsFront(vllm_server.url, tmp_path / "front") as front:
        yield front, tmp_path / "front" / "tls.crt", tmp_path / "other" / "tls.crt"


@pytest.mark.vllm
def test_an_https_endpoint_with_a_private_ca_passes_with_ca_file_and_is_named_untrusted_without(https_vllm):
    front, ca, other = https_vllm
    code, report, proc = smoke_json("--pattern=caching", f"--url={front.url}", f"--ca-file={ca}")
    assert code == 0, proc.stdout + proc.stderr
    assert report["url"] == front.url and by_name(report)["prefix cache hits"]["ok"]   # URL/metrics over https too
    # a baseline's informational prefix check reads https metrics with the same CA
    baseline = checks.run(front.url, "baseline", [QWEN], metrics_urls=[f"{front.url}/metrics"], timeout=60,
                          trust=checks.trust(str(ca)))
    assert "prefix cache hits" in [c.name for c in baseline.checks] and baseline.ok, baseline.checks
    for args in ((), (f"--ca-file={other}",)):
        proc = smoke("--pattern=baseline", f"--url={front.url}", "--timeout=5", *args)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "its TLS certificate is not trusted (self-signed certificate): give the CA that signed it with " \
               "--ca-file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("given, message", [
    ("missing.pem", "not a file"),
    ("", "not a file"),      # the directory itself
    ("notes.txt", "not a PEM CA bundle (SSLError: NO_CERTIFICATE_OR_CRL_FOUND)"),
])
def test_a_ca_file_that_is_no_ca_bundle_is_refused_before_any_request(tmp_path, given, message):
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    path = tmp_path / given
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    proc = smoke("--pattern=baseline", f"--ca-file={path}", f"--url=https://127.0.0.1:{listener.getsockname()[1]}")
    with pytest.raises(TimeoutError):
        listener.accept()    # no connection was attempted
    listener.close()
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr == f"error: --ca-file {path}: {message} (give the PEM file of the CA that signed the " \
                          "endpoint's certificate)\n", proc.stderr


def test_a_url_that_is_no_http_url_is_refused_naming_the_fix():
    for url in ("ftp://gw.example.com/", "http://[::1"):
        with pytest.raises(LightrailError) as err:
            checks.check_url(url)
        assert str(err.value).endswith(" (use http://HOST:PORT or https://HOST)"), str(err.value)


def test_a_server_that_never_answers_is_described_as_timed_out():
    silent = socket.socket()            # accepts the connection, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        with pytest.raises(httpx.TimeoutException) as err:
            httpx.get(f"http://127.0.0.1:{silent.getsockname()[1]}/v1/models", timeout=0.5)
        assert checks.describe(err.value) == "timed out"
    finally:
        silent.close()


@pytest.mark.vllm
def test_the_informational_prefix_check_reads_only_vllm_metrics_and_never_fails_a_baseline(vllm_server,
                                                                                           vllm_multimodel):
    """A metrics URL that does not answer is not read (the check is left out); one that is another
    server's (its counters never rise for these requests) fails the prefix check, and for a
    baseline that check is informational: marked, passing, the report passing."""
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    report = checks.run(vllm_server.url, "baseline", [QWEN], metrics_urls=[dead], timeout=60)
    assert "prefix cache hits" not in [c.name for c in report.checks] and report.ok, report.checks
    phi = vllm_multimodel.servers[1]
    report = checks.run(vllm_server.url, "baseline", [QWEN], metrics_urls=[phi.metrics_url], timeout=60)
    (prefix,) = [c for c in report.checks if c.name == "prefix cache hits"]
    assert prefix.data["hits"] == 0 and prefix.ok and prefix.detail.endswith(" (informational)"), prefix
    assert report.ok and all(c.ok for c in report.checks), report.checks


@pytest.mark.vllm
def test_the_shared_prefix_is_sized_with_the_endpoints_own_tokenize(vllm_server):
    """No model server's URL to fall back on: the endpoint's /tokenize sizes the prefix, and a
    prefix that cannot hold two whole blocks beside the question fails, naming its size."""
    with httpx.Client(base_url=vllm_server.url, timeout=60) as client:
        text, tokens = checks.shared_prefix(client, QWEN, 128, [])
        assert client.post("/tokenize", json={"model": QWEN, "prompt": text}).json()["count"] == tokens
        assert 2 * 128 <= tokens <= 8 * 128
        (card,) = [c for c in client.get("/v1/models").json()["data"] if c["id"] == QWEN]
        room = card["max_model_len"] - 64
        tight = checks.shared_prefix(client, QWEN, room // 2, [vllm_server.metrics_url])
    assert not tight.ok and tight.got.startswith("a prefix of ") and tight.got.endswith(f" tokens (room for {room})")
    assert int(tight.got.split()[3]) < 2 * (room // 2), tight.got


def test_prefix_check_failures_before_any_request_say_what_is_missing_in_full():
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    rises = "vllm:prefix_cache_hits_total rises"
    with http_server(b"# TYPE envoy_requests counter\nenvoy_requests_total 7\n", "text/plain") as gateway, \
            httpx.Client(base_url=gateway) as client:
        none = checks.prefix_cache(client, QWEN, [])
        not_vllm = checks.prefix_cache(client, QWEN, [f"{gateway}/metrics", f"{gateway}/stats"])
        unreadable = checks.prefix_cache(client, QWEN, [dead])
    assert none == checks.Check("prefix cache hits", False, 0, expected=rises, got="no metrics URL to read it from",
                                detail="pass --metrics-url=http://MODEL-SERVER:8000/metrics (one per server)")
    assert not_vllm == checks.Check("prefix cache hits", False, 0, expected=rises,
                                    got=f"no vllm:prefix_cache_queries_total at {gateway}/metrics, {gateway}/stats "
                                        "(not a vLLM server's /metrics?)")
    assert unreadable == checks.Check("prefix cache hits", False, 0, expected=f"counters from {dead}", got="no metrics",
                                      detail="cannot read metrics: connection refused (nothing listens on that port)")


@contextlib.contextmanager
def streaming_server(lines: list[bytes], seen: list):
    """A real HTTP server answering every POST with an event stream of `lines`; `seen` collects the bodies."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for line in lines:
                self.wfile.write(line + b"\n\n")

    with serving(Handler) as url:
        yield url


def test_a_stream_that_never_says_done_fails_and_the_request_is_a_short_chat():
    chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "one"}}]}'
    seen: list = []
    with streaming_server([chunk, chunk], seen) as url, httpx.Client(base_url=url, timeout=10) as client:
        cut = checks.streaming(client, QWEN)
    assert not cut.ok and cut.got == "2 chunks, no [DONE]" and cut.expected == "content chunks then [DONE]", cut
    assert cut.name == f"stream {QWEN}" and cut.data["chunks"] == 2 and 0 < cut.data["ttft_ms"] <= cut.latency_ms
    assert seen == [{"model": QWEN, "messages": [{"role": "user", "content": "Count to five."}],
                     "max_tokens": checks.MAX_TOKENS, "min_tokens": checks.MIN_TOKENS, "temperature": 0,
                     "stream": True}]
    with refusing(503, b'{"error": {"message": "no healthy upstream"}}') as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        refused = checks.streaming(client, QWEN)
    assert refused == checks.Check(f"stream {QWEN}", False, 0, expected="HTTP 200 event stream",
                                   got="HTTP 503: no healthy upstream"), refused


@pytest.mark.vllm
def test_a_real_stream_reports_its_chunks_and_time_to_first_token(vllm_server):
    with httpx.Client(base_url=vllm_server.url, timeout=60) as client:
        check = checks.streaming(client, QWEN)
    chunks, ttft = check.data["chunks"], check.data["ttft_ms"]
    assert check.ok and chunks > 0 and check.got == f"{chunks} chunks, [DONE]", check
    assert check.detail == f"{chunks} chunks, TTFT {ttft:.0f} ms" and 0 < ttft <= check.latency_ms < 60_000, check


def test_routing_sends_a_short_completion_per_request():
    seen: list = []
    with answering_as(QWEN, seen) as url, httpx.Client(base_url=url, timeout=10) as client:
        check = checks.routing(client, [QWEN, PHI], rounds=1)
    assert sorted(body["model"] for _, body in seen) == sorted([QWEN, PHI])
    assert all(path == "/v1/completions" and body == {"model": body["model"], "prompt": "Route me.", "max_tokens": 2}
               for path, body in seen), seen
    assert not check.ok and check.got == f"50 %; e.g. asked {PHI}, got {QWEN}", check


def test_an_unknown_model_check_wants_a_4xx_and_names_a_hang():
    with refusing(400, b'{"error": {"message": "model not found"}}') as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        refused = checks.unknown_model(client)
    assert refused.ok and refused.name == "unknown model is refused" and refused.expected == "HTTP 4xx", refused
    assert refused.got == "HTTP 400"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5) as client:
            hang = checks.unknown_model(client)
    finally:
        silent.close()
    assert hang == checks.Check("unknown model is refused", False, 0, expected="HTTP 4xx", got="timed out (a hang)")
