"""The smoke checks: real OpenAI requests through the endpoint users hit.

Each check returns a Check (pass/fail, latency, what was expected and what came back). The
warm-up retries until the endpoint first answers or the timeout runs out; after it, every
request is made once.
"""
from __future__ import annotations

import functools
import json
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

import httpx
from tenacity import RetryError, retry, retry_if_exception, stop_after_delay, wait_exponential

from lightrail.errors import LightrailError
from lightrail.smoke import metrics

MAX_TOKENS = 8
# vLLM's (and SGLang's) `min_tokens`: an end-of-sequence token sampled first would make an empty answer
# from a healthy server (the random test model does so about once in 700 requests); other servers
# ignore the field
MIN_TOKENS = 1
# the generation checks ask for greedy text: the same answer every time (sampled, a few byte-fragment
# tokens can decode to no text at all: a migration probe once got 0 chars from a healthy server)
GREEDY = 0
UNKNOWN_MODEL = "lightrail/no-such-model"
PREFIX_SENTENCE = "You are a meticulous assistant for platform engineers. "
PREFIX_BLOCKS = 8          # the shared prefix spans this many KV-cache blocks when the context allows
MIN_PREFIX_BLOCKS = 2      # fewer and a hit is not a meaningful test of prefix caching
DEFAULT_BLOCK = 16         # vLLM's default block size, when the server does not say


@dataclass
class Check:
    name: str
    ok: bool
    latency_ms: float
    detail: str = ""
    expected: str = ""
    got: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class Report:
    url: str
    pattern: str
    models: list[str]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"url": self.url, "pattern": self.pattern, "models": self.models, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


REFUSED_GRACE = 5.0    # seconds a refused connection is retried (a port-forward starting), then it is the answer
SECRET_QUERY = ("token", "key", "api_key", "apikey", "access_token", "auth", "sig", "signature", "password", "secret")


def check_url(url: str, flag: str = "--url") -> str:
    """The base URL without a trailing /v1 (OpenAI clients' base URLs end in /v1; ours do not)."""
    if any(ch.isspace() for ch in url):   # urlparse drops leading spaces, the HTTP client does not
        raise LightrailError(f"{flag} {mask_url(url.strip())!r} has whitespace in it; valid: http://HOST:PORT or "
                             "https://HOST, nothing around it")
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError as err:   # an unclosed [IPv6 bracket, a port out of range
        raise LightrailError(f"{flag} {mask_url(url)!r} is not a valid URL: {err}",
                             fix="use http://HOST:PORT or https://HOST") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LightrailError(f"{flag} {mask_url(url)!r} is not an HTTP URL", fix="use http://HOST:PORT or https://HOST")
    if port == 0:
        raise LightrailError(f"{flag} {mask_url(url)!r}: port 0 is not a port; valid: 1-65535")
    url = url.rstrip("/")
    return url.removesuffix("/v1") if urlparse(url).path.endswith("/v1") else url


def trust(ca_file: str = "") -> ssl.SSLContext | bool:
    """How https endpoints' certificates are checked: against the system's CAs, or (--ca-file) only
    against the given PEM bundle: a private CA, or a gateway's self-signed certificate."""
    if not ca_file:
        return True
    path = Path(ca_file).expanduser()
    fix = "give the PEM file of the CA that signed the endpoint's certificate"
    if not path.is_file():
        raise LightrailError(f"--ca-file {ca_file}: not a file", fix=fix)
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError, OSError) as err:
        raise LightrailError(f"--ca-file {ca_file}: not a PEM CA bundle ({err.__class__.__name__}: "
                             f"{getattr(err, 'reason', None) or err})", fix=fix) from None


def mask_url(url: str) -> str:
    """A URL as it may be shown: no user:password, and no token-like query values."""
    try:
        parsed = urlparse(str(url))
    except ValueError:
        return "<a URL that cannot be parsed>"
    netloc = parsed.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if any(w in k.lower() for w in SECRET_QUERY) else v)
                       for k, v in parse_qsl(parsed.query, keep_blank_values=True)], safe="*")
    return parsed._replace(netloc=netloc, query=query).geturl()


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000


def warm_up(client: httpx.Client, timeout: float, progress: Callable[[str], None] | None = None) -> float:
    """Wait (with backoff) until GET /v1/models answers 200; return how long it took in ms.

    Retried: 5xx (still starting) and timeouts until `timeout`; a refused connection only for
    REFUSED_GRACE seconds. Not retried: an answer that is not an OpenAI API (a web page, a 404),
    a failed TLS handshake.
    `progress(last_reason)` is called before every retry (the caller shows it once the wait is long).
    """
    start = time.perf_counter()
    where = mask_url(client.base_url)

    def retryable(err: BaseException) -> bool:
        if isinstance(err, httpx.ConnectError) and _tls(err):   # https against http: waiting will not change it
            return False
        if isinstance(err, httpx.ConnectError) and _refused(err):
            return time.perf_counter() - start < REFUSED_GRACE
        return isinstance(err, (httpx.HTTPError, _NotReady))

    def before_sleep(state):
        if progress:
            progress(describe(state.outcome.exception()))

    @retry(stop=stop_after_delay(timeout), wait=wait_exponential(multiplier=0.25, max=5),
           retry=retry_if_exception(retryable), reraise=False, before_sleep=before_sleep)
    def ping():
        resp = client.get("/v1/models")
        if resp.status_code >= 500:
            raise _NotReady(f"GET /v1/models answered HTTP {resp.status_code}{_error_message(resp)}")
        if resp.status_code != 200 or not _is_model_list(resp):   # waiting will not change it
            raise LightrailError(f"{where} answers HTTP but is not an OpenAI-compatible API: GET /v1/models returned "
                                 f"HTTP {resp.status_code} ({resp.headers.get('content-type', 'no content type')})"
                                 f"{_error_message(resp)}",
                                 fix="point --url at the OpenAI base URL (the one whose /v1/models lists models)")

    try:
        ping()
    except RetryError as err:
        cause = err.last_attempt.exception()
        raise LightrailError(f"{where} did not answer within {timeout:g} s: {describe(cause)}") from None
    except httpx.HTTPError as err:   # not retried: refused for longer than the grace period
        raise LightrailError(f"{where} did not answer: {describe(err)}") from None
    return (time.perf_counter() - start) * 1000


def _tls(err: BaseException) -> bool:
    return any(word in str(err) for word in ("SSL", "TLS", "certificate"))


def _refused(err: httpx.ConnectError) -> bool:
    return "refused" in str(err).lower() or isinstance(err.__context__, ConnectionRefusedError)


def _error_message(resp: httpx.Response) -> str:
    """The server's own error message when it sent one as JSON (never an HTML page)."""
    try:
        data = resp.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = data.get("error", data.get("message", data.get("detail")))
    text = error.get("message") if isinstance(error, dict) else error
    return f": {str(text)[:300]}" if text else ""


class _NotReady(Exception):
    pass


def _is_model_list(resp: httpx.Response) -> bool:
    try:
        return isinstance(resp.json().get("data"), list)
    except (ValueError, AttributeError):
        return False


def _no_answer_fails(name: str, expected: str):
    """A check whose request gets no usable answer (the endpoint went away mid-run) fails by name
    instead of ending smoke with a traceback. `name` may use the check's first argument: {0}."""
    def wrap(fn):
        @functools.wraps(fn)
        def guarded(client, *args, **kwargs):
            try:
                return fn(client, *args, **kwargs)
            except (httpx.HTTPError, ValueError) as err:
                return Check(name.format(*args), False, 0, detail=describe(err), expected=expected, got="no response")
        return guarded
    return wrap


def describe(err: BaseException | None) -> str:
    text = str(err)
    if isinstance(err, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
        why = text.split("certificate verify failed:", 1)[-1].split("(_ssl.c", 1)[0].strip()
        return f"its TLS certificate is not trusted ({why}): give the CA that signed it with --ca-file"
    if isinstance(err, httpx.ConnectError) and _tls(err):
        return f"TLS handshake failed ({text[:160]}); is the server plain http?"
    if isinstance(err, httpx.ConnectError) and _refused(err):
        return "connection refused (nothing listens on that port)"
    if isinstance(err, httpx.ConnectError):
        return f"host unreachable ({text[:160]})"
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    if isinstance(err, httpx.RemoteProtocolError):
        return f"not an HTTP server ({err})"
    if isinstance(err, httpx.ReadError):
        return f"not an HTTP server (it closed the connection without an HTTP answer: {err})"
    return str(err) or type(err).__name__


def models_listed(client: httpx.Client, models: list[str]) -> Check:
    resp, ms = _timed(lambda: client.get("/v1/models"))
    listed = sorted(m.get("id", "") for m in resp.json().get("data", [])) if resp.status_code == 200 else []
    missing = [m for m in models if m not in listed]
    return Check("models listed", resp.status_code == 200 and not missing, ms,
                 detail=f"missing: {', '.join(missing)}" if missing else f"{len(listed)} model(s)",
                 expected=", ".join(models), got=", ".join(listed) or f"HTTP {resp.status_code}")


def completion(client: httpx.Client, model: str) -> Check:
    body = {"model": model, "prompt": "The quick brown fox", "max_tokens": MAX_TOKENS, "min_tokens": MIN_TOKENS,
            "temperature": GREEDY}
    return _generation_check(client, f"completion {model}", "/v1/completions", body, model,
                             lambda choice: choice.get("text"))


def chat(client: httpx.Client, model: str) -> Check:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": MAX_TOKENS,
            "min_tokens": MIN_TOKENS, "temperature": GREEDY}
    return _generation_check(client, f"chat {model}", "/v1/chat/completions", body, model,
                             lambda choice: (choice.get("message") or {}).get("content"))


def _generation_check(client, name, path, body, model, text_of) -> Check:
    resp, ms = _timed(lambda: client.post(path, json=body))
    if resp.status_code != 200:
        return Check(name, False, ms, expected="HTTP 200 with text", got=f"HTTP {resp.status_code}{_error_message(resp)}")
    data = resp.json()
    text = text_of((data.get("choices") or [{}])[0]) or ""
    tokens = (data.get("usage") or {}).get("completion_tokens", 0)
    ok = bool(text) and data.get("model") == model
    return Check(name, ok, ms, detail=f"{tokens} tokens", expected=f"text from {model}",
                 got=f"{len(text)} chars from {data.get('model')}")


def streaming(client: httpx.Client, model: str) -> Check:
    """Streaming chat over SSE: chunks arrive, time to first token, ends with [DONE]."""
    body = {"model": model, "messages": [{"role": "user", "content": "Count to five."}],
            "max_tokens": MAX_TOKENS, "min_tokens": MIN_TOKENS, "temperature": GREEDY, "stream": True}
    start = time.perf_counter()
    ttft, chunks, done = None, 0, False
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                return Check(f"stream {model}", False, 0, expected="HTTP 200 event stream",
                             got=f"HTTP {resp.status_code}{_error_message(resp)}")
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                delta = (json.loads(payload).get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content"):
                    chunks += 1
                    ttft = ttft if ttft is not None else (time.perf_counter() - start) * 1000
    except httpx.HTTPError as err:
        return Check(f"stream {model}", False, 0, detail=describe(err), expected="chunks then [DONE]",
                     got=f"{chunks} chunks, stream broke")
    total = (time.perf_counter() - start) * 1000
    return Check(f"stream {model}", chunks > 0 and done, total,
                 detail=f"{chunks} chunks, TTFT {ttft:.0f} ms" if ttft is not None else f"{chunks} chunks",
                 expected="content chunks then [DONE]", got=f"{chunks} chunks, {'[DONE]' if done else 'no [DONE]'}",
                 data={"ttft_ms": ttft, "chunks": chunks})


def routing(client: httpx.Client, models: list[str], rounds: int = 6) -> Check:
    """An interleaved burst: every response must come from the model its request named."""
    order = [m for _ in range(rounds) for m in models]

    def one(model):
        try:
            resp = client.post("/v1/completions", json={"model": model, "prompt": "Route me.", "max_tokens": 2})
            return model, resp.json().get("model") if resp.status_code == 200 else f"HTTP {resp.status_code}"
        except httpx.HTTPError as err:
            return model, describe(err)

    (results, ms) = _timed(lambda: list(ThreadPoolExecutor(max_workers=len(models) * 2).map(one, order)))
    wrong = [(asked, got) for asked, got in results if asked != got]
    accuracy = 100.0 * (len(results) - len(wrong)) / len(results)
    return Check("routing by model name", not wrong, ms, detail=f"{accuracy:.0f} % of {len(results)} requests",
                 expected="100 %", got=f"{accuracy:.0f} %" + (f"; e.g. asked {wrong[0][0]}, got {wrong[0][1]}" if wrong else ""),
                 data={"accuracy_pct": accuracy, "requests": len(results)})


def prefix_cache(client: httpx.Client, model: str, metrics_urls: list[str], requests: int = 8,
                 trust: ssl.SSLContext | bool = True) -> Check:
    """A burst sharing a long prefix must make the servers' prefix-cache hit counter rise.

    The prefix is sized from the server itself (its tokenizer via /tokenize, max_model_len, and the
    block size in vllm:cache_config_info) so that it spans several KV blocks and still fits,
    whatever the model's tokenizer. Requests that fail are the failure, with the server's message.
    """
    expected = f"{metrics.PREFIX_HITS}_total rises"
    if not metrics_urls:
        return Check("prefix cache hits", False, 0, expected=expected, got="no metrics URL to read it from",
                     detail="pass --metrics-url=http://MODEL-SERVER:8000/metrics (one per server)")
    try:
        before = metrics.scrape(metrics_urls, trust=trust)
        block = metrics.block_size(metrics_urls, trust=trust) or DEFAULT_BLOCK
    except httpx.HTTPError as err:
        return Check("prefix cache hits", False, 0, detail=f"cannot read metrics: {describe(err)}",
                     expected=f"counters from {', '.join(metrics_urls)}", got="no metrics")
    if metrics.PREFIX_QUERIES not in before:
        return Check("prefix cache hits", False, 0, expected=expected,
                     got=f"no {metrics.PREFIX_QUERIES}_total at {', '.join(metrics_urls)} "
                         "(not a vLLM server's /metrics?)")
    sized = shared_prefix(client, model, block, metrics_urls, trust)
    if isinstance(sized, Check):
        return sized
    prefix, tokens = sized

    def one(i):
        return client.post("/v1/completions", json={"model": model, "max_tokens": 2,
                                                    "prompt": f"{prefix}\nQuestion {i}: what is {i} + {i}?"})

    responses, ms = _timed(lambda: [one(0)] + list(ThreadPoolExecutor(max_workers=4).map(one, range(1, requests))))
    failed = [r for r in responses if r.status_code != 200]
    if failed:
        return Check("prefix cache hits", False, ms, expected=f"{requests} answered requests, then {expected}",
                     got=f"{len(failed)} of {requests} requests failed: HTTP {failed[0].status_code}"
                         f"{_error_message(failed[0])}", detail=f"shared prefix of {tokens} tokens")
    after = metrics.scrape(metrics_urls, trust=trust)
    d = metrics.delta(before, after)
    hits, queries = d.get(metrics.PREFIX_HITS, 0.0), d.get(metrics.PREFIX_QUERIES, 0.0)
    rate = 100.0 * hits / queries if queries else 0.0
    return Check("prefix cache hits", hits > 0, ms,
                 detail=f"hit rate {rate:.0f} % ({hits:.0f}/{queries:.0f} tokens); shared prefix {tokens} tokens "
                        f"({tokens // block} blocks of {block})",
                 expected=expected, got=f"+{hits:.0f}",
                 data={"hits": hits, "queries": queries, "hit_rate_pct": rate, "prefix_tokens": tokens,
                       "block_size": block})


def shared_prefix(client: httpx.Client, model: str, block: int, metrics_urls: list[str],
                  trust: ssl.SSLContext | bool = True) -> tuple[str, int] | Check:
    """(text, tokens): PREFIX_BLOCKS blocks of the model's own tokens, or as many as fit beside a question."""
    def fail(got: str) -> Check:
        return Check("prefix cache hits", False, 0, expected=f"a shared prefix of at least {MIN_PREFIX_BLOCKS} "
                     f"KV blocks ({MIN_PREFIX_BLOCKS * block} tokens)", got=got)

    probe = PREFIX_SENTENCE * 8
    counted = _tokenize(client, model, probe, metrics_urls, trust)
    if counted is None:
        return fail("no /tokenize on the endpoint or the model server to size it with")
    per_sentence, limit = counted[0] / 8, counted[1]
    room = limit - 64 if limit else PREFIX_BLOCKS * block   # the question, max_tokens and special tokens
    want = min(PREFIX_BLOCKS * block, room)
    if want < MIN_PREFIX_BLOCKS * block:
        return fail(f"max_model_len {limit} leaves room for {max(room, 0)} prefix tokens")
    sentences = max(1, int(want / per_sentence))
    for _ in range(3):   # the estimate is per sentence; correct it by what the tokenizer says
        text = (PREFIX_SENTENCE * sentences).strip()
        tokens = (_tokenize(client, model, text, metrics_urls, trust) or (room + 1,))[0]
        if tokens <= room:
            break
        sentences = max(1, int(sentences * room / tokens) - 1)
    if tokens > room or tokens < MIN_PREFIX_BLOCKS * block:
        return fail(f"a prefix of {tokens} tokens (room for {room})")
    return text, tokens


def _tokenize(client: httpx.Client, model: str, text: str, metrics_urls: list[str],
              trust: ssl.SSLContext | bool = True) -> tuple[int, int | None] | None:
    """(tokens, max_model_len) from vLLM's /tokenize: the endpoint's, else the first model server's."""
    bases = [None] + [url.removesuffix("/metrics") for url in metrics_urls[:1]]
    for base in bases:
        url = f"{base}/tokenize" if base else "/tokenize"
        try:
            resp = (client.post(url, json={"model": model, "prompt": text}) if base is None else
                    httpx.post(url, json={"model": model, "prompt": text}, timeout=client.timeout,
                               verify=metrics.verify(url, trust)))
            data = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("count"), int):
            return data["count"], data.get("max_model_len")
    return None


def alias(client: httpx.Client, name: str, target: str) -> Check:
    """An alias answers, and from the model it names: the same greedy completion as asking the
    target itself, from a server that answers as the alias or the target (the llmd picker writes
    the alias back into responses; KServe's vLLM answers with its first name, the alias)."""
    def ask(model):
        body = {"model": model, "prompt": "The quick brown fox", "max_tokens": MAX_TOKENS, "temperature": 0, "seed": 0}
        return client.post("/v1/completions", json=body)

    resp, ms = _timed(lambda: ask(name))
    if resp.status_code != 200:
        return Check(f"alias {name}", False, ms, expected=f"HTTP 200 from {target}",
                     got=f"HTTP {resp.status_code}{_error_message(resp)}")
    direct = ask(target)
    text_of = lambda r: ((r.json().get("choices") or [{}])[0].get("text") or "") if r.status_code == 200 else None
    answered_as, text, expected = resp.json().get("model"), text_of(resp), text_of(direct)
    ok = answered_as in (name, target) and bool(text) and text == expected
    got = f"{answered_as}: {text!r}" if answered_as in (name, target) else f"an answer from {answered_as}"
    return Check(f"alias {name}", ok, ms, detail=f"-> {target}", expected=f"{target}'s greedy text {expected!r}", got=got)


def unknown_model(client: httpx.Client) -> Check:
    """A model the deployment does not serve gets an error response quickly, not a hang."""
    try:
        resp, ms = _timed(lambda: client.post("/v1/completions", json={"model": UNKNOWN_MODEL, "prompt": "x",
                                                                       "max_tokens": 2}))
    except httpx.TimeoutException:
        return Check("unknown model is refused", False, 0, expected="HTTP 4xx", got="timed out (a hang)")
    return Check("unknown model is refused", 400 <= resp.status_code < 500, ms, expected="HTTP 4xx",
                 got=f"HTTP {resp.status_code}")


def run(url: str, pattern: str, models: list[str], *, metrics_urls: list[str], timeout: float,
        prefix_check: str = "auto", progress: Callable[[str], None] | None = None,
        aliases: dict[str, str] | None = None, trust: ssl.SSLContext | bool = True) -> Report:
    """All checks for a pattern. prefix_check: "required" (caching), "auto" (report if readable);
    aliases: {alias: the served model it names}; trust: how https certificates are checked (trust())."""
    url = check_url(url)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10)),
                      verify=trust) as client:
        warm_ms = warm_up(client, timeout, progress)
        checks = [Check("warm-up", True, warm_ms, detail="first answer")]
        checks.append(models_listed(client, models))
        for model in models:
            checks += [completion(client, model), chat(client, model), streaming(client, model)]
        if len(models) > 1:
            checks.append(routing(client, models))
        checks += [alias(client, name, target) for name, target in (aliases or {}).items()]
        if prefix_check == "required" or (prefix_check == "auto" and metrics_urls and _readable(metrics_urls, trust)):
            checks.append(prefix_cache(client, models[0], metrics_urls, trust=trust))
            if prefix_check == "auto":
                checks[-1].ok = True   # informational outside the caching pattern
                checks[-1].detail += " (informational)"
        checks.append(unknown_model(client))
    return Report(url=mask_url(url), pattern=pattern, models=models, checks=checks)


def _readable(urls: list[str], trust: ssl.SSLContext | bool = True) -> bool:
    """Whether the URLs are vLLM metrics (a gateway's or router's /metrics are not)."""
    try:
        return metrics.PREFIX_QUERIES in metrics.scrape(urls, timeout=3, trust=trust)
    except httpx.HTTPError:
        return False


# The checks that send requests: no usable answer is a failed check, not a traceback. Wrapped here, not
# with decorator syntax: mutmut 3 does not mutate decorated functions (docs/testing.md, mutation score).
models_listed = _no_answer_fails("models listed", "a model list")(models_listed)
_generation_check = _no_answer_fails("{0}", "HTTP 200 with text")(_generation_check)
streaming = _no_answer_fails("stream {0}", "content chunks then [DONE]")(streaming)
routing = _no_answer_fails("routing by model name", "100 %")(routing)
prefix_cache = _no_answer_fails("prefix cache hits", "prefix-cache counters that rise")(prefix_cache)
alias = _no_answer_fails("alias {0}", "the target's greedy text")(alias)
unknown_model = _no_answer_fails("unknown model is refused", "HTTP 4xx")(unknown_model)
