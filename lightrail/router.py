"""The endpoint picker's configuration, shared by both stacks.

llm-d-router's EPP reads an EndpointPickerConfig: the scorer plugins and their weights come
from the pattern (`router.scorers`), so the llmd chart values and KServe's
`router.scheduler.config.inline` carry the same document.
"""
from __future__ import annotations

from lightrail.plan import Plan

PICKER = "max-score-picker"
# What the scorers read: the model servers' Prometheus metrics (queue length, KV-cache use),
# as in llm-d-router v0.10's default-plugins.yaml.
DATA_PLUGINS = [
    {"type": "metrics-data-source", "parameters": {"scheme": "http", "path": "/metrics", "insecureSkipVerify": True}},
    {"type": "core-metrics-extractor"},
]
# Header that body-based routing fills from the request body's `model` (Gateway API
# Inference Extension convention, also KServe's ModelBasedRoutingHeaderName default).
MODEL_HEADER = "X-Gateway-Model-Name"


def epp_config(plan: Plan) -> dict:
    """EndpointPickerConfig (llm-d-router v0.10 schema): metrics sources, the pattern's scorers
    with their weights, and a max-score picker."""
    scorers = dict(plan.scorers)
    return {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [dict(p) for p in DATA_PLUGINS] + [{"type": name} for name in scorers] + [{"type": PICKER}],
        "schedulingProfiles": [{
            "name": "default",
            "plugins": [{"pluginRef": name, "weight": weight} for name, weight in scorers.items()]
            + [{"pluginRef": PICKER}],
        }],
    }
