"""The endpoint picker's configuration, shared by both stacks.

llm-d-router's EPP reads an EndpointPickerConfig: the scorer plugins and their weights come
from the pattern (`router.scorers`), so the llmd chart values and KServe's
`router.scheduler.config.inline` carry the same document.
"""
from __future__ import annotations

from lightrail.plan import Plan

PICKER = "max-score-picker"
# Header that body-based routing fills from the request body's `model` (Gateway API
# Inference Extension convention, also KServe's ModelBasedRoutingHeaderName default).
MODEL_HEADER = "X-Gateway-Model-Name"


def epp_config(plan: Plan) -> dict:
    """EndpointPickerConfig with the pattern's scorers and weights and a max-score picker."""
    scorers = dict(plan.scorers)
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [{"type": name} for name in scorers] + [{"type": PICKER}],
        "schedulingProfiles": [{
            "name": "default",
            "plugins": [{"pluginRef": name, "weight": weight} for name, weight in scorers.items()]
            + [{"pluginRef": PICKER}],
        }],
    }
