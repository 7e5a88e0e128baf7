"""Guards: is the target still healthy at this weight? Pure decisions over probe samples.

Signals the migrator can observe wherever it runs: its own requests through the Gateway to each
side (probe rules of the front route), and the target pool's ready endpoints from the API
server; with --metrics-url also what the Gateway answered clients from the target's pools
(gatewaymetrics). A guard that trips names the signal and the numbers.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from lightrail.errors import LightrailError
from lightrail.migrate.gatewaymetrics import Counts


class GuardTripped(LightrailError):
    """A hold's verdict: the weights go back to the last good step."""


@dataclass(frozen=True)
class Sample:
    ok: bool
    seconds: float
    detail: str = ""     # the failure, as the probe saw it


@dataclass(frozen=True)
class Limits:
    failures: int = 0             # failed target probes (and 5xx client answers) tolerated during one hold
    latency_factor: float = 3.0   # target median may reach factor x the source's baseline median...
    latency_margin: float = 1.0   # ... or baseline + margin seconds, whichever is larger
    unread: int = 3               # scrapes of the gateway's counters failed in a row (--metrics-url)


def median(samples: list[Sample]) -> float | None:
    times = [s.seconds for s in samples if s.ok]
    return statistics.median(times) if times else None


def latency_limit(baseline: float, limits: Limits = Limits()) -> float:
    return max(baseline * limits.latency_factor, baseline + limits.latency_margin)


def verdict(samples: list[Sample], baseline: float | None, ready: int, desired: int,
            limits: Limits = Limits(), clients: Counts | None = None, unread: int = 0, error: str = "") -> str | None:
    """Why the target must not keep (or gain) weight, or None while it is healthy. `clients`: the
    client requests the Gateway sent the target during this hold (None: not read); `unread`: its
    counters' scrapes failed in a row, the last with `error` - a weight whose effect on clients
    cannot be seen is not kept."""
    failed = [s for s in samples if not s.ok]
    if len(failed) > limits.failures:
        return f"{len(failed)} of {len(samples)} target probe(s) failed, last: {failed[-1].detail}"
    if unread >= limits.unread:
        return f"the gateway's counters could not be read {unread} times in a row, last: {error}"
    if clients is not None and clients.errors > limits.failures:
        return (f"the gateway answered {clients.errors} of {clients.requests} client request(s) to the target with "
                "5xx during this hold")
    if ready < desired:
        return f"only {ready} of {desired} target endpoint(s) ready"
    mid = median(samples)
    if baseline is not None and mid is not None and len(samples) >= 3 and mid > latency_limit(baseline, limits):
        return (f"target latency median {mid * 1000:.0f} ms is above the limit {latency_limit(baseline, limits) * 1000:.0f} ms "
                f"(source baseline {baseline * 1000:.0f} ms)")
    return None
