"""Client requests per side, as the Gateway counts them: Istio's `istio_requests_total` or
agentgateway's `agentgateway_requests_total`.

The migrator's probes show what its own requests see; the gateway's counters show what clients
get from each pool while a weight is held. Both proxies serve them at `/stats/prometheus` on port
15020; a scrape is read by the counter it carries. Each names a pool's requests its own way:

- Istio sends a route's InferencePool backend to a shadow Service it makes for the pool
  (`<pool>-ip-<hash>`, pilot's InferencePoolServiceName in
  pilot/pkg/config/kube/gateway/inferencepool_collection.go), and counts under that Service.
- agentgateway's controller makes the pool a backend named by its hostname,
  `<pool>.<namespace>.inference.<cluster domain>`, and the proxy's `backend` label is that and the
  port (DefaultRouteBackend in controller/pkg/agentgateway/plugins/reference_indexes.go, the
  HTTP labels in crates/agentgateway/src/telemetry/metrics.rs; the same from v1.0.0 to v1.4.1).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

from lightrail.errors import LightrailError

_SEPARATOR, _HASH, _MAX_NAME = "-ip-", 8, 63
Destination = tuple[str, str]     # (namespace, name) a counter names a request's backend by


def shadow_service(pool: str) -> str:
    """The Service Istio makes for an InferencePool: the pool's name, `-ip-`, and 8 hex digits of
    its SHA-256, the name cut to fit 63 characters."""
    digest = hashlib.sha256(pool.encode()).hexdigest()[:_HASH]
    return f"{pool[:_MAX_NAME - len(_SEPARATOR) - _HASH]}{_SEPARATOR}{digest}"


def _istio(labels: Mapping[str, str]) -> tuple[Destination, str]:
    return ((labels.get("destination_service_namespace", ""), labels.get("destination_service_name", "")),
            labels.get("response_code", ""))


def _agentgateway(labels: Mapping[str, str]) -> tuple[Destination, str]:
    host = labels.get("backend", "").rpartition(":")[0]      # "unknown" (no backend chosen): no host
    pool, _, rest = host.partition(".")
    namespace, _, domain = rest.partition(".")
    return ((namespace, pool) if domain.startswith("inference.") else ("", "")), labels.get("status", "")


@dataclass(frozen=True)
class Counter:
    metric: str
    name: Callable[[str], str]                                    # what a pool is counted under
    read: Callable[[Mapping[str, str]], tuple[Destination, str]]  # a sample's backend and response code


COUNTERS = (Counter("istio_requests_total", shadow_service, _istio),
            Counter("agentgateway_requests_total", lambda pool: pool, _agentgateway))


@dataclass(frozen=True)
class Counts:
    requests: int = 0
    errors: int = 0      # answered 5xx

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(self.requests - other.requests, self.errors - other.errors)

    def __str__(self) -> str:
        return f"{self.requests} ({self.errors} 5xx)"


def per_side(text: str, namespace: str, pools: Mapping[str, Sequence[str]]) -> dict[str, Counts]:
    """Requests and 5xx per side ("source", "target": the names of its pools) from a scrape.

    A scrape with neither counter is not an Istio or agentgateway proxy's (or the URL is wrong):
    refused, not read as zero traffic. A gateway that has served nothing yet has the counter's
    HELP line."""
    # per counter present; agentgateway's text is OpenMetrics (its TYPE line names the counter without
    # _total), which this parser reads as a family with the HELP line and another with the samples
    samples: dict[str, list] = {}
    try:
        for family in text_string_to_metric_families(text):
            for c in COUNTERS:
                if family.name in (c.metric, c.metric.removesuffix("_total")):
                    samples.setdefault(c.metric, []).extend(family.samples)
    except ValueError as err:
        raise LightrailError(f"the gateway metrics are not in the Prometheus text format: {err}") from None
    if not samples:
        raise LightrailError(f"no {' or '.join(c.metric for c in COUNTERS)} in the gateway metrics",
                             fix="give --metrics-url the gateway proxy's /stats/prometheus (port 15020, Istio's or "
                                 "agentgateway's), e.g. on Istio `kubectl port-forward deploy/<gateway>-istio 15020` "
                                 "and --metrics-url=http://127.0.0.1:15020/stats/prometheus")
    counter = next(c for c in COUNTERS if c.metric in samples)
    wanted = {(namespace, counter.name(pool)): side for side, names in pools.items() for pool in names}
    totals = {side: [0, 0] for side in pools}
    for sample in samples[counter.metric]:
        destination, code = counter.read(sample.labels)
        side = wanted.get(destination)
        if sample.name != counter.metric or side is None:
            continue
        totals[side][0] += int(sample.value)
        if code.startswith("5"):
            totals[side][1] += int(sample.value)
    return {side: Counts(*values) for side, values in totals.items()}


@dataclass
class HoldWatch:
    """The gateway's counters over one hold, from scrapes taken in turn (one per probe). A scrape that
    fails (a port-forward reconnecting, a busy proxy) is taken again at the next probe; how many failed
    in a row is the guard's to judge (guards.verdict), and a hold ends only on a scrape that answered."""
    base: Mapping[str, Counts] | None = None
    now: Mapping[str, Counts] | None = None
    unread: int = 0        # scrapes failed in a row
    error: str = ""        # the last failure
    answered: int = 0      # scrapes that answered

    def read(self, scrape: Callable[[], Mapping[str, Counts]]) -> None:
        try:
            counts = scrape()
        except LightrailError as err:
            self.unread, self.error = self.unread + 1, err.message
            return
        self.base = self.base or counts
        self.now, self.unread, self.answered = counts, 0, self.answered + 1

    @property
    def settled(self) -> bool:
        """Whether a hold may end here: the last scrape answered and the counts span a window (a second
        answered scrape; a hold whose first probe outlasts it would otherwise show 0 and 0), or no
        scrape is taken at all."""
        return self.unread == 0 and self.answered != 1

    @property
    def clients(self) -> dict[str, Counts] | None:
        """Counts per side since the first scrape of the hold (a gateway restart resets its counters:
        then all it counted since)."""
        if self.base is None or self.now is None:
            return None
        return {side: now - self.base[side] if now.requests >= self.base[side].requests else now
                for side, now in self.now.items()}
