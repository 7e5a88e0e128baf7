"""Model aliases (`--alias NAME=MODEL`): friendly names that answer for a served model.

llmd: the endpoint picker rewrites the body's `model` by an InferenceModelRewrite (llm-d.ai/v1alpha2)
on the model's InferencePool, and back in the response. kserve: the model's one name,
`spec.model.name`. Pure checks here; the stacks render the result (docs/aliases.md).
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Mapping

from lightrail.errors import LightrailError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
REWRITE_API = "llm-d.ai/v1alpha2"
REWRITE_KIND = "InferenceModelRewrite"
BODY_ROUTED = ("the gateway routes by the body's model name before the endpoint picker sees the request "
               "(body-based routing sets X-Gateway-Model-Name and each model's HTTPRoute matches its own name), "
               "so an alias would match no route")
KSERVE_ONE = ("KServe names a model once (spec.model.name); more names need the endpoint picker's rewrites, "
              "which LLMInferenceService does not render")


def parse(values) -> tuple[tuple[str, str], ...]:
    """--alias NAME=MODEL values (repeatable) into (name, model) pairs, names checked."""
    out = []
    for value in values or ():
        name, sep, model = str(value).partition("=")
        name, model = name.strip(), model.strip()
        if not sep or not name or not model:
            raise LightrailError(f"--alias {value!r} is not NAME=MODEL; valid: e.g. --alias chat=Qwen/Qwen2.5-3B-Instruct")
        if not _NAME.match(name):
            raise LightrailError(f"alias {name!r} is not a model name: 1 to 128 letters, digits or . _ : / -, "
                                 "starting with a letter or digit")
        out.append((name, model))
    return tuple(out)


def assign(servers: tuple, aliases: tuple[tuple[str, str], ...], *, stack: str, pattern, engine: str,
           engine_spec: Mapping[str, Any]) -> tuple:
    """The servers with their aliases, or an error saying why the aliases cannot be served."""
    if not aliases:
        return servers
    names = [n for n, _ in aliases]
    served = {s.model for s in servers}
    for name in names:
        if names.count(name) > 1:
            raise LightrailError(f"alias {name!r} is given twice; each alias names one model")
        if name in served:
            raise LightrailError(f"alias {name!r} is already a served model name; valid: a name not in "
                                 f"{', '.join(sorted(served))}")
    for _, model in aliases:
        if model not in served:
            raise LightrailError(f"alias target {model!r} is not served by this plan; valid: {', '.join(sorted(served))}")
    if pattern.body_based_routing:
        raise LightrailError(f"--alias with pattern {pattern.name!r} is refused: {BODY_ROUTED}",
                             fix="valid: aliases with baseline, caching or moe")
    if stack == "llmd" and engine_spec.get("parser") == "passthrough":
        raise LightrailError(f"--alias with --inference-engine={engine} is refused: the endpoint picker's passthrough "
                             "parser does not read the body, so it cannot rewrite the model name")
    if stack == "kserve":
        if len(aliases) > 1:
            raise LightrailError(f"--stack=kserve takes one --alias per model: {KSERVE_ONE}")
        if engine != "vllm":
            raise LightrailError(f"--alias with --stack=kserve and --inference-engine={engine} is refused: the engine "
                                 "serves one name, and KServe's spec.model.name would replace the model's own")
    return tuple(replace(s, aliases=tuple(n for n, m in aliases if m == s.model)) for s in servers)


def model_rewrite(server, namespace: str) -> dict:
    """The InferenceModelRewrite that makes the picker of `server`'s pool serve its aliases."""
    return {
        "apiVersion": REWRITE_API,
        "kind": REWRITE_KIND,
        "metadata": {"name": f"{server.name}-aliases", "namespace": namespace},
        "spec": {
            "poolRef": {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": server.pool},
            "rules": [{"matches": [{"model": {"type": "Exact", "value": alias}}],
                       "targets": [{"modelRewrite": server.model, "weight": 1}]} for alias in server.aliases],
        },
    }
