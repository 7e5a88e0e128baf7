"""The endpoint picker's configuration, shared by both stacks.

llm-d-router's EPP reads an EndpointPickerConfig: the scorer plugins and their weights come
from the pattern (`router.scorers`), so the llmd chart values and KServe's
`router.scheduler.config.inline` carry the same document.
"""
from __future__ import annotations

from lightrail import engines
from lightrail.catalog import load_catalog
from lightrail.plan import Plan

PICKER = "max-score-picker"
# What the scorers read: the model servers' Prometheus metrics (queue length, KV-cache use),
# as in llm-d-router v0.10's default-plugins.yaml, mapped per engine (lightrail/engines.py). Since
# v0.10 the scheme is set here only (the --model-server-metrics-scheme flag is gone); servers
# behind TLS use self-signed certificates.
# Header that body-based routing fills from the request body's `model` (Gateway API
# Inference Extension convention, also KServe's ModelBasedRoutingHeaderName default).
MODEL_HEADER = "X-Gateway-Model-Name"


def metrics_scheme(plan: Plan) -> str:
    """How the model servers serve /metrics: https when KServe's TLS is on, else http."""
    return "https" if plan.stack == "kserve" and plan.request.kserve_tls else "http"


def epp_config(plan: Plan) -> dict:
    """EndpointPickerConfig (llm-d-router v0.10 schema): metrics sources, the pattern's scorers
    with their weights, and a max-score picker."""
    scorers = dict(plan.scorers)
    engine = load_catalog().engines[plan.request.engine]
    source = {"type": "metrics-data-source",
              "parameters": {"scheme": metrics_scheme(plan), "path": engine["metrics"]["path"],
                             "insecureSkipVerify": True}}
    return {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [source, engines.metrics_extractor(engine)] + [{"type": name} for name in scorers]
        + [{"type": PICKER}],
        "schedulingProfiles": [{
            "name": "default",
            "plugins": [{"pluginRef": name, "weight": weight} for name, weight in scorers.items()]
            + [{"pluginRef": PICKER}],
        }],
    }
