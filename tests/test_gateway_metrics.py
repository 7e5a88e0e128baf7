"""Client requests per side from a gateway proxy's counters, Istio's and agentgateway's
(lightrail/migrate/gatewaymetrics.py)."""
from __future__ import annotations

import pytest

from lightrail.errors import LightrailError
from lightrail.migrate import guards
from lightrail.migrate.gatewaymetrics import Counts, HoldWatch, per_side, shadow_service

HEAD = "# HELP istio_requests_total Total requests.\n# TYPE istio_requests_total counter\n"


def line(service: str, code: int, n: int, namespace: str = "shop") -> str:
    return (f'istio_requests_total{{reporter="source",destination_service="{service}.{namespace}.svc.cluster.local",'
            f'destination_service_name="{service}",destination_service_namespace="{namespace}",'
            f'response_code="{code}"}} {n}\n')


def test_the_shadow_service_is_istios_name_for_the_pool():
    """As istiod names them (seen in tests/e2e/test_migrate.py's cluster): pool, -ip-, 8 hex digits of its
    SHA-256; a long pool name is cut so the whole fits 63 characters, the hash kept whole."""
    assert shadow_service("multimodel-qwen2-5-3b-instruct") == "multimodel-qwen2-5-3b-instruct-ip-1c3ab60f"
    assert shadow_service("multimodel-phi-3-mini-4k-instruct") == "multimodel-phi-3-mini-4k-instruct-ip-0511f88b"
    long = "a" * 60
    name = shadow_service(long)
    assert len(name) == 63 and name.startswith("a" * 51 + "-ip-") and name[-8:] == shadow_service("a" * 60)[-8:]
    assert shadow_service("a" * 51).startswith("a" * 51 + "-ip-") and len(shadow_service("a" * 51)) == 63


def test_requests_and_5xx_are_summed_per_side_over_its_pools_and_codes():
    text = HEAD + "".join([
        line(shadow_service("src-a"), 200, 90), line(shadow_service("src-a"), 503, 2),
        line(shadow_service("src-b"), 200, 10), line(shadow_service("tgt-a"), 200, 7),
        line(shadow_service("tgt-a"), 500, 1), line(shadow_service("tgt-a"), 0, 4),    # a client gone: not a 5xx
        line(shadow_service("tgt-a"), 200, 50, namespace="other"),                     # another namespace's pool
        line("unrelated", 503, 9)])
    got = per_side(text, "shop", {"source": ["src-a", "src-b"], "target": ["tgt-a"]})
    assert got == {"source": Counts(102, 2), "target": Counts(12, 1)}
    assert str(got["target"]) == "12 (1 5xx)" and got["target"] - Counts(2, 1) == Counts(10, 0)


# As agentgateway's proxy serves it (prometheus-client for Rust, OpenMetrics text): the counter "requests" under
# the prefix agentgateway, its samples with _total, labels in the order of its HTTPLabels.
AGW_HEAD = "# HELP agentgateway_requests The total number of HTTP requests sent.\n# TYPE agentgateway_requests counter\n"


def agw_line(backend: str, status: str, n: int) -> str:
    return (f'agentgateway_requests_total{{backend="{backend}",protocol="unknown",method="POST",status="{status}",'
            f'reason="Upstream",bind="80/shop/caching-gateway",gateway="shop/caching-gateway",listener="http",'
            f'route="shop/caching-front",route_rule="unknown"}} {n}\n')


def pool_backend(pool: str, namespace: str = "shop", domain: str = "cluster.local") -> str:
    return f"{pool}.{namespace}.inference.{domain}:8000"


def test_agentgateway_counts_a_pool_under_the_hostname_its_controller_gives_the_pool():
    text = AGW_HEAD + "".join([
        agw_line(pool_backend("src-a"), "200", 90), agw_line(pool_backend("src-a"), "503", 2),
        agw_line(pool_backend("src-b", domain="corp.example"), "200", 10),     # another cluster domain
        agw_line(pool_backend("tgt-a"), "200", 7), agw_line(pool_backend("tgt-a"), "500", 1),
        agw_line(pool_backend("tgt-a", namespace="other"), "200", 50),         # another namespace's pool
        agw_line("tgt-a.shop.svc.cluster.local:8000", "503", 4),               # a Service of that name, not the pool
        agw_line("unknown", "503", 9)]) + "# EOF\n"                           # answered before a backend was chosen
    got = per_side(text, "shop", {"source": ["src-a", "src-b"], "target": ["tgt-a"]})
    assert got == {"source": Counts(102, 2), "target": Counts(8, 1)}
    assert per_side(AGW_HEAD + "# EOF\n", "shop", {"source": ["a"], "target": ["b"]}) == \
        {"source": Counts(), "target": Counts()}


def test_a_gateway_that_served_nothing_yet_counts_zero_but_a_scrape_without_either_counter_is_refused():
    assert per_side(HEAD, "shop", {"source": ["a"], "target": ["b"]}) == {"source": Counts(), "target": Counts()}
    with pytest.raises(LightrailError) as err:
        per_side("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n", "shop", {"source": ["a"], "target": ["b"]})
    assert str(err.value).startswith("no istio_requests_total or agentgateway_requests_total in the gateway metrics "
                                     "(give --metrics-url the gateway proxy's /stats/prometheus (port 15020, Istio's "
                                     "or agentgateway's)")
    with pytest.raises(LightrailError, match="not in the Prometheus text format"):
        per_side("istio_requests_total{ 1\n", "shop", {"source": ["a"], "target": ["b"]})


def test_a_5xx_answered_from_the_target_trips_the_guard_before_latency_is_read():
    ok = [guards.Sample(True, 0.05)] * 3
    assert guards.verdict(ok, 0.05, 1, 1, clients=Counts(40, 0)) is None
    assert guards.verdict(ok, 0.05, 1, 1, clients=None) is None
    assert guards.verdict(ok, 0.05, 1, 1, clients=Counts(40, 2)) == \
        "the gateway answered 2 of 40 client request(s) to the target with 5xx during this hold"
    assert guards.verdict(ok, 0.05, 1, 1, guards.Limits(failures=2), Counts(40, 2)) is None


def test_a_hold_counts_from_its_first_answered_scrape_and_a_failed_one_is_taken_again():
    """A scrape that fails (a port-forward reconnecting) leaves the last counts and is counted in a row;
    the next answer clears it; a gateway restart (counters lower than the base) counts all since."""
    def scrape(source, target):
        return lambda: {"source": Counts(*source), "target": Counts(*target)}

    def fails():
        raise LightrailError("the gateway metrics do not answer at --metrics-url=http://127.0.0.1:15020: refused")

    watch = HoldWatch()
    assert watch.settled    # no --metrics-url: nothing to wait for
    watch.read(fails)   # the hold's first scrape failed: nothing to count from yet
    assert (watch.clients, watch.unread, watch.settled) == (None, 1, False)
    watch.read(scrape((100, 0), (10, 0)))
    # one answered scrape spans no window: a hold whose first probe took all its seconds goes on
    assert (watch.clients, watch.unread, watch.settled) == ({"source": Counts(), "target": Counts()}, 0, False)
    watch.read(scrape((130, 1), (25, 2)))
    assert watch.settled
    watch.read(fails)
    assert not watch.settled
    watch.read(fails)
    assert watch.clients == {"source": Counts(30, 1), "target": Counts(15, 2)}
    assert (watch.unread, watch.error) == (2, "the gateway metrics do not answer at "
                                              "--metrics-url=http://127.0.0.1:15020: refused")
    watch.read(scrape((5, 0), (3, 0)))   # the proxy restarted
    assert watch.clients == {"source": Counts(5, 0), "target": Counts(3, 0)} and watch.unread == 0


def test_counters_unread_three_times_in_a_row_trip_the_guard_and_say_why():
    ok = [guards.Sample(True, 0.05)] * 3
    assert guards.verdict(ok, 0.05, 1, 1, clients=Counts(40, 0), unread=2, error="refused") is None
    assert guards.verdict(ok, 0.05, 1, 1, clients=Counts(40, 0), unread=3, error="refused") == \
        "the gateway's counters could not be read 3 times in a row, last: refused"
    failed = [guards.Sample(False, 0, "HTTP 503")]
    assert guards.verdict(failed, 0.05, 1, 1, unread=3).startswith("1 of 1 target probe(s) failed")
