"""The traffic driver's judgement without a server: which URLs it refuses, what counts as served,
and how a share is compared with a weights timeline (tests/e2e/test_gateway_model.py drives it
through the gateway model against real vLLMs)."""
from __future__ import annotations

import pytest

from lightrail.errors import LightrailError
from lightrail.testing.traffic import Record, Report, TrafficDriver, _verdict


@pytest.mark.parametrize("url", ["http://10.0.0.1:80", "http://example.com", "https://8.8.8.8", "ftp://127.0.0.1/x",
                                 "127.0.0.1:8000", "http://127.0.0.1.example.com"])
def test_only_loopback_urls_take_load(url):
    with pytest.raises(LightrailError, match="loopback"):
        TrafficDriver(url, "m")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1/ns/name", "http://[::1]:9", "http://127.3.2.1"])
def test_loopback_urls_are_accepted(url):
    TrafficDriver(url, "m")


@pytest.mark.parametrize("status, stream, text, verdict", [
    (200, True, 'data: {"choices": []}\n\ndata: [DONE]\n\n', None),
    (200, True, 'data: {"choices": []}\n\n', "stream ended without data: [DONE]"),
    (200, True, 'data: {"error": {"message": "boom"}}\n\ndata: [DONE]\n\n',
     'error event in the stream: {"error": {"message": "boom"}}'),
    (200, False, '{"choices": [{"text": "hi"}]}', None),
    (200, False, '{"error": "x"}', "answer without choices"),
    (503, False, "no healthy upstream\n", "HTTP 503: no healthy upstream"),
])
def test_a_request_is_served_only_with_a_complete_answer(status, stream, text, verdict):
    assert _verdict(status, stream, text) == verdict


def records(start, backends, every=0.1):
    return [Record(start=start + i * every, end=start + i * every + 0.05, backend=b) for i, b in enumerate(backends)]


def test_the_share_is_judged_per_timeline_segment_after_settling():
    # 0-10 s: all "a"; 10-20 s: half "b"; 20-30 s: only "b" but the first second still "a" (settling).
    rs = records(0, ["a"] * 100) + records(10, ["a", "b"] * 50) + records(20, ["a"] * 10 + ["b"] * 90)
    report = Report(rs)
    assert report.share_problems([(0, 0.0), (10, 0.5), (20, 1.0)], "b", settle=1.0, tolerance=0.05) == []
    wrong = report.share_problems([(0, 0.0), (10, 0.8), (20, 1.0)], "b", settle=1.0, tolerance=0.05)
    assert wrong == ["from +10.0s: b took 0.50 of 90 requests, expected 0.80 +- 0.05"]
    unsettled = report.share_problems([(0, 0.0), (10, 0.5), (20, 1.0)], "b", settle=0.0, tolerance=0.05)
    assert unsettled == ["from +20.0s: b took 0.90 of 100 requests, expected 1.00 +- 0.05"]
    assert "only 0 routed requests" in report.share_problems([(0, 0.0), (40, 1.0)], "b")[1]


def test_failures_are_summed_by_backend_and_reason():
    ok = Record(start=0, end=1, backend="ns/a")
    bad = [Record(start=1, end=2, backend="ns/a", error="HTTP 503: no healthy upstream") for _ in range(2)]
    report = Report([ok, *bad, Record(start=3, end=4, error="ConnectError: refused")])
    assert report.total == 4 and len(report.failures) == 3
    assert report.by_backend == {"ns/a": 3}
    assert report.reasons() == {"ns/a: HTTP 503: no healthy upstream": 2, "-: ConnectError: refused": 1}
    first, second = report.buckets(width=2.0)
    assert (first.start, dict(first.counts), first.share("ns/a")) == (0, {"ns/a": 3}, 1.0)
    assert (second.start, dict(second.counts), second.share("ns/a")) == (2, {"-": 1}, None)
