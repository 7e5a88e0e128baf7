"""Read vLLM's Prometheus counters from model servers (summed over every server and label set)."""
from __future__ import annotations

import ssl
from urllib.parse import urlparse

import httpx
from prometheus_client.parser import text_string_to_metric_families

CACHE_CONFIG = "vllm:cache_config_info"
PREFIX_HITS = "vllm:prefix_cache_hits"
PREFIX_QUERIES = "vllm:prefix_cache_queries"
REQUESTS_OK = "vllm:request_success"
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def counters(text: str) -> dict[str, float]:
    """Counter totals by family name (Prometheus drops the _total suffix from family names)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[family.name] = out.get(family.name, 0.0) + sample.value
    return out


def verify(url: str, trust: ssl.SSLContext | bool = True) -> ssl.SSLContext | bool:
    """How to check a metrics URL's certificate: with `trust` (the system's CAs, or --ca-file's),
    except on this machine's loopback: there HTTPS comes from a port-forward to a pod whose
    certificate (KServe's) names the cluster service, never 127.0.0.1."""
    return trust if urlparse(url).hostname not in LOOPBACK else False


def scrape(urls: list[str], timeout: float = 10, trust: ssl.SSLContext | bool = True) -> dict[str, float]:
    """Sum the counters of every metrics URL; raises httpx.HTTPError when one cannot be read."""
    total: dict[str, float] = {}
    for url in urls:
        resp = httpx.get(url, timeout=timeout, verify=verify(url, trust))
        resp.raise_for_status()
        for name, value in counters(resp.text).items():
            total[name] = total.get(name, 0.0) + value
    return total


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}


def block_size(urls: list[str], timeout: float = 10, trust: ssl.SSLContext | bool = True) -> int | None:
    """The KV-cache block size (tokens) from the first server's `vllm:cache_config_info`, or None."""
    for url in urls[:1]:
        resp = httpx.get(url, timeout=timeout, verify=verify(url, trust))
        resp.raise_for_status()
        for family in text_string_to_metric_families(resp.text):
            for sample in family.samples:
                if sample.name == CACHE_CONFIG and str(sample.labels.get("block_size", "")).isdigit():
                    return int(sample.labels["block_size"])
    return None
