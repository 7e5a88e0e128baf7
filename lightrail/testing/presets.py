"""KServe v0.20.0's well-known presets, read from the upstream data and templated as KServe would.

Tests hold the kserve renders to what KServe will actually merge under them (the endpoint
picker's command, the probes, the route on the shared gateway), without a cluster. Only the few
Go-template forms those presets use are evaluated; anything else is left as written.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from lightrail.kserve.compose import child_name

PRESETS = "kserve-presets/llmisvcconfig-v0.20.0.yaml"
_IF_TLS = re.compile(r"\{\{ if \.GlobalConfig\.EnableTLS \}\}(.*?)(?:\{\{else\}\}(.*?))?\{\{-? end \}\}", re.S)
_CHILD = re.compile(r"\{\{ ChildName \.ObjectMeta\.Name `([^`]*)` \}\}")


def preset(schemas: Path, name: str) -> dict:
    """One LLMInferenceServiceConfig by name, from LIGHTRAIL_SCHEMAS/kserve-presets."""
    for doc in yaml.safe_load_all((schemas / PRESETS).read_text()):
        if doc and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(name)


def templated(value, isvc: dict, *, tls: bool = False, gateway: str = "kserve/kserve-ingress-gateway",
              header: str = "X-Gateway-Model-Name"):
    """`value` (a preset fragment) with KServe's template variables for this LLMInferenceService."""
    if isinstance(value, dict):
        return {k: templated(v, isvc, tls=tls, gateway=gateway, header=header) for k, v in value.items()}
    if isinstance(value, list):
        return [templated(v, isvc, tls=tls, gateway=gateway, header=header) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    meta = isvc["metadata"]
    gw_namespace, gw_name = gateway.split("/")
    text = _IF_TLS.sub(lambda m: m[1] if tls else (m[2] or ""), value)
    text = _CHILD.sub(lambda m: child_name(meta["name"], m[1]), text)
    for var, sub in {".ObjectMeta.Namespace": meta["namespace"], ".ObjectMeta.Name": meta["name"],
                     ".Spec.Model.Name": isvc["spec"]["model"]["name"],
                     ".GlobalConfig.IngressGatewayName": gw_name, ".GlobalConfig.IngressGatewayNamespace": gw_namespace,
                     ".GlobalConfig.ModelBasedRoutingHeaderName": header}.items():
        text = text.replace("{{ %s }}" % var, sub)
    return text.strip()
