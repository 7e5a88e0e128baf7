"""Where a migration stands, kept in the cluster so any interruption can be resumed or undone.

A ConfigMap `<pattern>-migration` in the deployment's namespace holds everything needed to
rebuild the plan without the source's route (which the migration removes): both requests, the
client rules, the options, the phase position and direction, the weights and a short history.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from lightrail.errors import LightrailError
from lightrail.migrate.plan import Migration, Options, plan_migration
from lightrail.ops.objects import MIGRATION_LABEL
from lightrail.plan import LABEL_PREFIX, MANAGED_BY, Request, build_plan

KEY = "state.json"
FORMAT = 1


def state_name(pattern: str) -> str:
    return f"{pattern}-migration"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class State:
    source: dict                  # the source's Request (as a dict)
    to: str
    gateway: list[str]            # [namespace, name]
    rules: dict                   # per model server: the client rules
    parent_refs: dict
    source_fronted: bool
    options: dict
    position: int = 0             # forward: the phase to run next (or running); rollback: phases >= it are undone
    direction: str = "forward"    # forward | rollback
    status: str = "running"       # running | paused (Ctrl-C, a guard) | failed
    weight: int = 0               # the target's share now (%)
    phase: str = ""               # name of the phase at `position`
    baseline: float | None = None # the source's probe latency median (s), what the latency guard compares with
    since: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    reason: str = ""              # why it paused or failed
    history: list = field(default_factory=list)   # [time, phase, weight, note], newest last (bounded)

    @classmethod
    def start(cls, m: Migration) -> "State":
        return cls(source=asdict(m.source.request), to=m.target.stack, gateway=list(m.gateway),
                   rules={k: list(v) for k, v in m.rules.items()},
                   parent_refs={k: list(v) for k, v in m.parent_refs.items()}, source_fronted=m.source_fronted,
                   options=asdict(m.options), phase=m.phases[0].name)

    def migration(self) -> Migration:
        request = Request(**{k: _tuples(v) for k, v in self.source.items()})
        options = Options(**{k: _tuples(v) for k, v in self.options.items()})
        return plan_migration(build_plan(request), self.to, (self.gateway[0], self.gateway[1]), self.rules,
                              self.parent_refs, options, self.source_fronted)

    def note(self, text: str) -> None:
        self.updated = now()
        self.history = [*self.history, [self.updated, self.phase, self.weight, text]][-50:]

    def config_map(self, namespace: str) -> dict:
        pattern = self.source["pattern"]
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": state_name(pattern), "namespace": namespace,
                             "labels": {**MANAGED_BY, f"{LABEL_PREFIX}/pattern": pattern,
                                        MIGRATION_LABEL: f"{self.source['stack']}-to-{self.to}"}},
                "data": {KEY: json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)}}


def _tuples(value):
    """JSON gives lists where the plan's frozen values hold tuples (models, aliases, steps)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_config_map(cm: dict) -> State:
    """The state a ConfigMap holds, or LightrailError naming what is wrong with it."""
    name = cm.get("metadata", {}).get("name", "?")
    try:
        data = json.loads((cm.get("data") or {})[KEY])
        if data.pop("format", None) != FORMAT:
            raise ValueError("unknown format")
        return State(**data)
    except (KeyError, ValueError, TypeError) as err:
        raise LightrailError(f"ConfigMap {name} does not hold a migration state this version can read ({err})",
                             fix=f"inspect it with `kubectl get configmap {name} -o yaml`; delete it only if no "
                                 "migration is in progress") from None
