"""Steady client traffic through a gateway, recorded request by request, to prove a migration.

A migration is "zero failed requests" only if someone kept asking during it. The driver sends
OpenAI chat and completion requests at a bounded rate (half streamed: a stream counts as served
only with HTTP 200 and its final `data: [DONE]`), remembers who answered each one (the gateway
model's `x-lightrail-backend` header) and when, and reports failures with their reasons and the
share each backend took over time. Loopback only: it is a load generator.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlsplit

import httpx

from lightrail.errors import LightrailError

BACKEND_HEADER = "x-lightrail-backend"
PROMPTS = ("Say hello.", "Name a colour.", "Count to three.", "What is a gateway?")
PATHS = ("/v1/chat/completions", "/v1/completions")


@dataclass
class Record:
    """One request: times are time.monotonic() seconds, as the test's own clock."""
    start: float
    end: float = 0.0
    path: str = ""
    stream: bool = False
    status: int | None = None
    backend: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Bucket:
    start: float
    counts: Counter

    def share(self, backend: str) -> float | None:
        """The backend's share of the requests that reached a backend in this bucket (None: none did)."""
        routed = sum(n for b, n in self.counts.items() if b != "-")
        return self.counts[backend] / routed if routed else None


@dataclass
class Report:
    records: list[Record]
    failures: list[Record] = field(init=False)
    by_backend: Counter = field(init=False)      # answered requests (ok or not) per backend

    def __post_init__(self):
        self.records = sorted(self.records, key=lambda r: r.start)
        self.failures = [r for r in self.records if not r.ok]
        self.by_backend = Counter(r.backend for r in self.records if r.backend)

    @property
    def total(self) -> int:
        return len(self.records)

    def reasons(self) -> Counter:
        return Counter(f"{r.backend or '-'}: {r.error}" for r in self.failures)

    def summary(self) -> str:
        lines = [f"{self.total} requests, {len(self.failures)} failed; per backend: {dict(self.by_backend)}"]
        lines += [f"  {n} x {reason}" for reason, n in self.reasons().most_common(10)]
        return "\n".join(lines)

    def buckets(self, width: float = 5.0) -> list[Bucket]:
        """Requests per backend ("-": none answered) in consecutive `width`-second buckets by start time."""
        if not self.records:
            return []
        first = self.records[0].start
        out: dict[int, Counter] = {}
        for r in self.records:
            out.setdefault(int((r.start - first) // width), Counter())[r.backend or "-"] += 1
        return [Bucket(first + i * width, out.get(i, Counter())) for i in range(max(out) + 1)]

    def share_problems(self, timeline: Sequence[tuple[float, float]], target: str, *, tolerance: float = 0.15,
                       settle: float = 2.0, min_requests: int = 10) -> list[str]:
        """Where the target's share of routed requests strayed from the timeline, as sentences.

        timeline: (time.monotonic() of a weight change, the target's expected share from then on),
        in order. Requests starting within `settle` seconds after a change are not judged (the
        gateway converges late); each remaining segment is judged as a whole, so the tolerance
        compares a proportion over many requests rather than a handful in one bucket.
        """
        problems = []
        ends = [t for t, _ in timeline[1:]] + [float("inf")]
        for (since, share), until in zip(timeline, ends):
            seen = [r for r in self.records if since + settle <= r.start < until and r.backend]
            if len(seen) < min_requests:
                problems.append(f"from +{since - timeline[0][0]:.1f}s: only {len(seen)} routed requests, "
                                f"fewer than {min_requests} to judge a share of {share:.2f}")
                continue
            got = sum(r.backend == target for r in seen) / len(seen)
            if abs(got - share) > tolerance:
                problems.append(f"from +{since - timeline[0][0]:.1f}s: {target} took {got:.2f} of {len(seen)} "
                                f"requests, expected {share:.2f} +- {tolerance:.2f}")
        return problems


class TrafficDriver:
    """`with TrafficDriver(gateway.url, "Qwen/Qwen2.5-3B-Instruct", rate=8) as traffic: ...; traffic.report()`

    url: the base clients use (`http://127.0.0.1:PORT` or a prefix such as `.../ns/name`); the
    OpenAI paths are appended. At most `concurrency` requests are open at once: when the gateway
    slows down, the rate drops rather than the queue growing.
    """

    def __init__(self, url: str, model: str, *, rate: float = 5.0, concurrency: int = 8, stream_ratio: float = 0.5,
                 max_tokens: int = 8, prompts: Sequence[str] = PROMPTS, headers: dict[str, str] | None = None,
                 timeout: float = 60):
        _require_loopback(url)
        if rate <= 0 or concurrency < 1 or not 0 <= stream_ratio <= 1 or not prompts:
            raise LightrailError("traffic driver: rate > 0, concurrency >= 1, 0 <= stream_ratio <= 1 and prompts given")
        self.url, self.model = url.rstrip("/"), model
        self.rate, self.concurrency, self.stream_ratio = rate, concurrency, stream_ratio
        self.max_tokens, self.prompts, self.headers, self.timeout = max_tokens, list(prompts), headers or {}, timeout
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "TrafficDriver":
        self._thread.start()
        return self

    def stop(self) -> Report:
        """Stop sending, let requests in flight end (up to their timeout), and report; a request
        still open after that counts as failed."""
        self._stop.set()
        self._thread.join(self.timeout + 10)
        for record in list(self.records):
            if not record.end:
                record.error, record.end = "still open when the driver stopped", time.monotonic()
        return self.report()

    def __enter__(self) -> "TrafficDriver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def report(self) -> Report:
        """The requests that have ended (all of them once stopped)."""
        return Report([r for r in list(self.records) if r.end])

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        tasks = set()
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            began, sent = time.monotonic(), 0
            while not self._stop.is_set():
                await slots.acquire()
                task = asyncio.ensure_future(self._one(client, sent, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                await asyncio.sleep(max(0.0, began + sent / self.rate - time.monotonic()))
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient, n: int, slots: asyncio.Semaphore) -> None:
        pair = n // 2                        # chat and completion alternate; streaming spreads over pairs
        path, stream = PATHS[n % 2], int((pair + 1) * self.stream_ratio) > int(pair * self.stream_ratio)
        prompt = self.prompts[n % len(self.prompts)]
        body = {"model": self.model, "max_tokens": self.max_tokens, "stream": stream,
                **({"messages": [{"role": "user", "content": prompt}]} if "chat" in path else {"prompt": prompt})}
        record = Record(start=time.monotonic(), path=path, stream=stream)
        self.records.append(record)
        try:
            async with client.stream("POST", self.url + path, json=body, headers=self.headers) as resp:
                record.status, record.backend = resp.status_code, resp.headers.get(BACKEND_HEADER)
                text = "".join([chunk async for chunk in resp.aiter_text()])
            record.error = _verdict(resp.status_code, stream, text)
        except httpx.HTTPError as err:
            record.error = f"{type(err).__name__}: {err}"[:300]
        finally:
            record.end = time.monotonic()
            slots.release()


def _verdict(status: int, stream: bool, text: str) -> str | None:
    """None when the request was served; else why not."""
    if status != 200:
        return f"HTTP {status}: {text.strip()[:200]}"
    if stream:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("data: {") and "error" in _json(line[6:])]
        if errors:                           # vLLM reports a failure mid-stream as an error event
            return f"error event in the stream: {errors[0][6:200]}"
        return None if lines and lines[-1] == "data: [DONE]" else "stream ended without data: [DONE]"
    answer = _json(text)
    if not answer:
        return f"answer is not a JSON object: {text[:100]!r}"
    return None if answer.get("choices") else "answer without choices"


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _require_loopback(url: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise LightrailError(f"traffic driver sends load only to loopback URLs; got {url!r} "
                             "(valid: http://127.0.0.1:PORT, http://localhost:PORT, http://[::1]:PORT)")
