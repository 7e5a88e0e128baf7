"""The hold's guards at their edges: the verdicts `invoke migrate` acts on during every hold.

The common cases (a failed probe, missing endpoints, slow answers) are in test_migrate_plan.py.
"""
from __future__ import annotations

from lightrail.migrate.guards import Limits, Sample, median, verdict


def test_a_median_exactly_at_the_limit_keeps_the_weight():
    """The limit is the largest healthy median: 3 x a 1 s baseline is 3 s, and 3 s passes."""
    assert verdict([Sample(True, 3.0)] * 3, baseline=1.0, ready=2, desired=2) is None
    assert verdict([Sample(True, 3.5)] * 3, baseline=1.0, ready=2, desired=2) == (
        "target latency median 3500 ms is above the limit 3000 ms (source baseline 1000 ms)")


def test_the_latency_margin_given_widens_the_limit_and_the_message_says_so():
    """--latency-margin reaches the limit (run.py passes it as Limits(latency_margin=...))."""
    slow = [Sample(True, 1.5)] * 3      # limit: max(3 x 0.1, 0.1 + 2.0) = 2.1 s
    assert verdict(slow, 0.1, 3, 3, Limits(latency_margin=2.0)) is None
    slower = [Sample(True, 2.5)] * 3
    assert verdict(slower, 0.1, 3, 3, Limits(latency_margin=2.0)) == (
        "target latency median 2500 ms is above the limit 2100 ms (source baseline 100 ms)")


def test_tolerated_failures_without_an_answer_leave_no_latency_to_judge():
    """Every probe failed but within --failures: no median to compare, the endpoint count decides."""
    failed = [Sample(False, 0.0, "HTTP 503")]
    assert median(failed) is None
    assert verdict(failed, 0.1, 3, 3, Limits(failures=1)) is None
    assert verdict(failed, 0.1, 1, 3, Limits(failures=1)) == "only 1 of 3 target endpoint(s) ready"
    assert verdict([], 0.1, 3, 3) is None, "before the first probe nothing has tripped"


def test_the_median_ignores_failed_probes():
    """A failed probe's 0 s is not an answer time: it must not pull the median down."""
    samples = [Sample(True, 2.0), Sample(True, 2.2), Sample(False, 0.0, "timeout"), Sample(True, 2.4)]
    assert median(samples) == 2.2
    assert verdict(samples, 0.5, 3, 3, Limits(failures=1)) == (
        "target latency median 2200 ms is above the limit 1500 ms (source baseline 500 ms)")
