"""Benchmark scenarios: harness-neutral workload descriptions read from benchmarks/scenarios/*.yaml.

A scenario says what traffic to send (dataset shape, request count, rate or concurrency, which
models); each harness adapter translates it into its own flags or config. A `sweep` turns one
scenario into several load points, run one after the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from lightrail.errors import LightrailError, choose
from lightrail.settings import ROOT

SCENARIOS_DIR = ROOT / "benchmarks" / "scenarios"
DATASETS = ("random", "shared-prefix")
MODEL_CHOICES = ("first", "all")
SWEEP_KEYS = ("request_rate", "max_concurrency")
FIELDS = ("description", "dataset", "input_len", "output_len", "range_ratio", "prefix_len", "num_prefixes",
          "requests", "request_rate", "max_concurrency", "models", "seed", "sweep")


@dataclass(frozen=True)
class Load:
    """One load point: requests per second (inf = send all at once), a concurrency cap, and the
    dataset seed (each point of a sweep gets its own, so that no point is served from the
    prefix cache warmed by the one before)."""

    request_rate: float = math.inf
    max_concurrency: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        rate = "inf" if math.isinf(self.request_rate) else self.request_rate
        return {"request_rate": rate, "max_concurrency": self.max_concurrency}

    @property
    def label(self) -> str:
        rate = "inf" if math.isinf(self.request_rate) else f"{self.request_rate:g}"
        return f"rate={rate}" + (f" conc={self.max_concurrency}" if self.max_concurrency else "")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    dataset: str                 # random | shared-prefix
    input_len: int               # prompt tokens (shared-prefix: the unique part after the prefix)
    output_len: int
    requests: int                # per load point
    range_ratio: float = 0.0     # lengths drawn from [len*(1-r), len*(1+r)]
    prefix_len: int = 0          # shared-prefix: tokens of each shared prefix
    num_prefixes: int = 1        # shared-prefix: distinct prefixes the requests share
    load: Load = Load()
    sweep_key: str | None = None
    sweep_values: tuple[float, ...] = ()
    models: str = "first"        # first | all (spread requests round-robin over the pattern's models)
    seed: int = 0

    @property
    def points(self) -> tuple[Load, ...]:
        if not self.sweep_key:
            return (replace(self.load, seed=self.seed),)
        if self.sweep_key == "request_rate":
            return tuple(replace(self.load, request_rate=float(v), seed=self.seed + i) for i, v in enumerate(self.sweep_values))
        return tuple(replace(self.load, max_concurrency=int(v), seed=self.seed + i) for i, v in enumerate(self.sweep_values))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "description", "dataset", "input_len", "output_len", "requests",
                                           "range_ratio", "prefix_len", "num_prefixes", "models", "seed")}
        d["load"] = self.load.to_dict()
        if self.sweep_key:
            d["sweep"] = {self.sweep_key: ["inf" if math.isinf(v) else v for v in self.sweep_values]}
        return d


def available(directory: Path = SCENARIOS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_scenario(name: str, directory: Path = SCENARIOS_DIR) -> Scenario:
    """A scenario by name (benchmarks/scenarios/NAME.yaml) or by path to a YAML file."""
    path = Path(name)
    if not (name.endswith((".yaml", ".yml")) and path.is_file()):
        choose("scenario", name, available(directory))
        path = directory / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LightrailError(f"scenario {path} is not valid YAML: {err}") from None
    return parse(path.stem, data, source=str(path))


def parse(name: str, data: dict, source: str = "") -> Scenario:
    where = f"scenario {source or name}"
    if not isinstance(data, dict):
        raise LightrailError(f"{where} must be a mapping of settings; valid keys: {', '.join(FIELDS)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise LightrailError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(FIELDS)}")
    for key in ("dataset", "input_len", "output_len", "requests"):
        if key not in data:
            raise LightrailError(f"{where}: {key} is required")
    dataset = choose(f"dataset in {where}", data["dataset"], DATASETS)
    models = choose(f"models in {where}", data.get("models", "first"), MODEL_CHOICES)
    sweep_key, sweep_values = None, ()
    if data.get("sweep") is not None:
        sweep = data["sweep"]
        if not isinstance(sweep, dict) or len(sweep) != 1 or next(iter(sweep)) not in SWEEP_KEYS:
            raise LightrailError(f"{where}: sweep must map one of {', '.join(SWEEP_KEYS)} to a list of values")
        sweep_key, values = next(iter(sweep.items()))
        if not isinstance(values, list) or not values:
            raise LightrailError(f"{where}: sweep.{sweep_key} must be a non-empty list")
        sweep_values = tuple(_rate(v, where) if sweep_key == "request_rate" else _positive(v, f"sweep.{sweep_key}", where)
                             for v in values)
    concurrency = data.get("max_concurrency")
    scenario = Scenario(
        name=name,
        description=str(data.get("description", "")).strip(),
        dataset=dataset,
        input_len=_positive(data["input_len"], "input_len", where),
        output_len=_positive(data["output_len"], "output_len", where),
        requests=_positive(data["requests"], "requests", where),
        range_ratio=float(data.get("range_ratio", 0.0)),
        prefix_len=int(data.get("prefix_len", 0)),
        num_prefixes=_positive(data.get("num_prefixes", 1), "num_prefixes", where),
        load=Load(_rate(data.get("request_rate", "inf"), where),
                  None if concurrency is None else _positive(concurrency, "max_concurrency", where)),
        sweep_key=sweep_key, sweep_values=sweep_values, models=models, seed=int(data.get("seed", 0)),
    )
    if not 0 <= scenario.range_ratio < 1:
        raise LightrailError(f"{where}: range_ratio must be in [0, 1), got {scenario.range_ratio}")
    if dataset == "shared-prefix" and scenario.prefix_len < 1:
        raise LightrailError(f"{where}: the shared-prefix dataset needs prefix_len >= 1")
    return scenario


def _positive(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LightrailError(f"{where}: {key} must be a whole number >= 1, got {value!r}")
    return value


def _rate(value: Any, where: str) -> float:
    if value in ("inf", float("inf")):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LightrailError(f"{where}: request_rate must be a number > 0 or 'inf', got {value!r}")
    return float(value)
