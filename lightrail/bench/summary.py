"""The normalized summary every harness result is turned into (summary.json).

One `point` per load level (a sweep has several): requests, tokens, throughput and latency
percentiles from the harness; server counters, prefix-cache hit rate and cost added by the
runner. Latencies are milliseconds, throughputs per second.
"""
from __future__ import annotations

from typing import Any

from lightrail.smoke import metrics

LATENCIES = ("ttft", "tpot", "itl", "e2e")
PERCENTILES = ("p50", "p90", "p99")
SCHEMA = 1


def point(*, ok: int, failed: int, input_tokens: int, output_tokens: int, duration_s: float,
          latency_ms: dict[str, dict[str, float | None]], first_error: str | None = None) -> dict[str, Any]:
    """What a harness adapter returns: counts, durations and latency percentiles (ms)."""
    missing = set(LATENCIES) - set(latency_ms)
    if missing:
        raise ValueError(f"latencies missing: {sorted(missing)}")
    rate = (lambda n: round(n / duration_s, 4) if duration_s else 0.0)
    return {
        "requests": {"ok": int(ok), "failed": int(failed)},
        "tokens": {"input": int(input_tokens), "output": int(output_tokens)},
        "duration_s": round(float(duration_s), 4),
        "throughput": {"requests_per_s": rate(ok), "output_tokens_per_s": rate(output_tokens),
                       "total_tokens_per_s": rate(input_tokens + output_tokens)},
        "latency_ms": {k: {p: _round(latency_ms[k].get(p)) for p in ("mean", *PERCENTILES)} for k in LATENCIES},
        "first_error": first_error,
    }


def server_side(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    """vLLM's own counters over the run, and the prefix-cache hit rate they imply."""
    if before is None or after is None:
        return {"server": None, "prefix_cache": None}
    d = metrics.delta(before, after)
    hits, queries = d.get(metrics.PREFIX_HITS, 0.0), d.get(metrics.PREFIX_QUERIES, 0.0)
    return {
        "server": {"requests_ok": int(d.get(metrics.REQUESTS_OK, 0)), "prompt_tokens": int(d.get(metrics.PROMPT_TOKENS, 0)),
                   "generation_tokens": int(d.get(metrics.GENERATION_TOKENS, 0))},
        "prefix_cache": {"hits": int(hits), "queries": int(queries),
                         "hit_rate": round(hits / queries, 4) if queries else None},
    }


def cost_per_million(per_hour: float | None, output_tokens_per_s: float) -> float | None:
    """USD per million output tokens if the deployment ran flat out at this throughput."""
    if not per_hour or not output_tokens_per_s:
        return None
    return round(per_hour / (output_tokens_per_s * 3600) * 1e6, 4)


def totals(points: list[dict[str, Any]], overall: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts summed over all load points (what the server counters must agree with).

    `overall` is server_side() over the whole run, for runs that could not scrape per point.
    """
    out: dict[str, Any] = {
        "requests": {k: sum(p["requests"][k] for p in points) for k in ("ok", "failed")},
        "tokens": {k: sum(p["tokens"][k] for p in points) for k in ("input", "output")},
        "duration_s": round(sum(p["duration_s"] for p in points), 4),
    }
    if points and all(p.get("server") for p in points):
        out["server"] = {k: sum(p["server"][k] for p in points) for k in points[0]["server"]}
        hits = sum(p["prefix_cache"]["hits"] for p in points)
        queries = sum(p["prefix_cache"]["queries"] for p in points)
        out["prefix_cache"] = {"hits": hits, "queries": queries, "hit_rate": round(hits / queries, 4) if queries else None}
    elif overall and overall.get("server"):
        out.update(overall)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
