"""The catalog: patterns, accelerators, engines, prices and pinned versions, read from patterns/*.yaml.

Pure data with light checks; everything that turns it into something deployable is in plan.py.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from lightrail.errors import LightrailError
from lightrail.settings import PATTERNS_DIR

STACKS = ("llmd", "kserve")
DATA_FILES = ("accelerators.yaml", "engines.yaml", "gateways.yaml", "migration.yaml", "prices.yaml", "versions.yaml")


@dataclass(frozen=True)
class Pattern:
    name: str
    summary: str
    models: tuple[str, ...]
    replicas: int
    vllm_args: tuple[str, ...]
    scorers: Mapping[str, int]
    body_based_routing: bool = False
    multinode: bool = False
    min_models: int = 1
    max_models: int | None = 1
    accelerators: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    unsupported: Mapping[str, str] = field(default_factory=dict)
    pod_security: Mapping[str, Mapping[str, str]] = field(default_factory=dict)   # stack -> {level, reason}: the least its pods need

    def unsupported_reason(self, accel: str, stack: str) -> str | None:
        """Why this pattern cannot run on accel/stack (keys: accel, stack or 'stack:accel')."""
        for key in (f"{stack}:{accel}", accel, stack):
            if key in self.unsupported:
                return self.unsupported[key]
        if accel not in self.accelerators:
            return f"no {accel} settings in patterns/{self.name}.yaml"
        return None


@dataclass(frozen=True)
class Catalog:
    patterns: Mapping[str, Pattern]
    accelerators: Mapping[str, Mapping[str, Any]]
    gateways: Mapping[str, Mapping[str, Any]]
    migration: Mapping[str, Any]
    prices: Mapping[str, Any]
    versions: Mapping[str, Any]
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def pattern(self, name: str) -> Pattern:
        if name not in self.patterns:
            raise LightrailError(f"unknown pattern {name!r}; valid: {', '.join(self.patterns)}")
        return self.patterns[name]

    def accelerator(self, name: str) -> Mapping[str, Any]:
        if name not in self.accelerators:
            raise LightrailError(f"unknown accel {name!r}; valid: {', '.join(self.accelerators)}")
        return self.accelerators[name]

    def image(self, key: str) -> str:
        return self.versions["images"][key]


def _freeze(value):
    """Lists become tuples so catalog data can sit in frozen dataclasses; dicts stay dicts."""
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _pattern(path: Path) -> Pattern:
    raw = yaml.safe_load(path.read_text())
    if raw.get("name") != path.stem:
        raise LightrailError(f"{path}: name {raw.get('name')!r} must match the file name {path.stem!r}")
    router = raw.get("router", {})
    return Pattern(
        name=raw["name"],
        summary=raw["summary"],
        models=tuple(raw["models"]),
        replicas=int(raw["replicas"]),
        vllm_args=tuple(raw.get("vllm_args", ())),
        scorers=_freeze(router.get("scorers", {})),
        body_based_routing=bool(router.get("body_based_routing", False)),
        multinode=bool(raw.get("multinode", False)),
        min_models=int(raw.get("min_models", 1)),
        max_models=None if int(raw.get("min_models", 1)) > 1 else 1,
        accelerators=_freeze(raw.get("accelerators", {})),
        unsupported=_freeze(raw.get("unsupported", {})),
        pod_security=_freeze(raw.get("pod_security", {})),
    )


@functools.lru_cache(maxsize=None)
def load_catalog(directory: Path = PATTERNS_DIR) -> Catalog:
    """Read every pattern and the shared data files once per process."""
    data = {name: yaml.safe_load((directory / name).read_text()) for name in DATA_FILES}
    patterns = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name not in DATA_FILES:
            patterns[path.stem] = _pattern(path)
    order = ["baseline", "multimodel", "caching", "moe"]
    ordered = dict(sorted(patterns.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])))
    return Catalog(
        patterns=ordered,
        accelerators=_freeze(data["accelerators.yaml"]),
        gateways=_freeze(data["gateways.yaml"]),
        migration=_freeze(data["migration.yaml"]),
        prices=_freeze(data["prices.yaml"]),
        versions=_freeze(data["versions.yaml"]),
        engines=_freeze(data["engines.yaml"]),
    )
