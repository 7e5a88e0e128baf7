"""Offline validation of rendered objects and chart values against the real upstream schemas.

Every render calls this: built-in kinds strictly (unknown fields rejected) for the pinned
Kubernetes version, custom resources against their CRDs, llmd chart values against the charts'
values schemas (see lightrail.schemas). A kind with no schema is a problem, never a silent pass.
Every object's metadata is also checked the way the API server would (name, label syntax),
since neither the Kubernetes OpenAPI schemas nor CRDs do.
"""
from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from lightrail import tools

from lightrail.errors import LightrailError
from lightrail.schemas import INT_RANGES, NoSchema, object_validator, values_schema, values_validator
from lightrail.settings import TOOLS_BIN, TOOLS_SCHEMAS
from lightrail.settings import schemas_dir as default_schemas_dir


@dataclass(frozen=True)
class Problem:
    kind: str
    name: str
    namespace: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.kind}/{self.name}" if self.name else self.kind
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def validate_objects(objects: Iterable[dict], *, schemas_dir: Path | None = None) -> list[Problem]:
    """Every problem in every object; an empty list means all are valid.

    schemas_dir None means LIGHTRAIL_SCHEMAS (or its default); if there is none, every custom
    resource is a problem that says to set it.
    """
    schemas_dir = schemas_dir if schemas_dir is not None else default_schemas_dir()
    problems: list[Problem] = []
    for obj in objects:
        problems.extend(_validate_object(obj, schemas_dir))
    return problems


def check(objects: Iterable[dict], *, schemas_dir: Path | None = None) -> None:
    """Raise LightrailError listing every problem; return quietly when all objects are valid."""
    problems = validate_objects(objects, schemas_dir=schemas_dir)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        objects = len({(p.kind, p.namespace, p.name) for p in problems})
        raise LightrailError(f"{len(problems)} problem(s) in {objects} invalid object(s):\n  {listing}")


def validate_values(chart: str, values: dict, *, schemas_dir: Path | None = None,
                    strict: bool = False) -> list[Problem]:
    """Problems in a chart's values.

    A chart for which patterns/versions.yaml lists no values schema (upstream ships none, e.g.
    llm-d-router-gateway) passes unless `strict`; a listed schema that cannot be found never does.
    """
    schemas_dir = schemas_dir if schemas_dir is not None else default_schemas_dir()
    try:
        path = values_schema(chart, schemas_dir)
    except NoSchema as err:
        return [Problem("values", chart, "", "", str(err))]
    if path is None:
        return [Problem("values", chart, "", "", f"no values schema for chart {chart} "
                        "(none listed under `chart-schemas:` in patterns/versions.yaml)")] if strict else []
    return [Problem("values", chart, "", _path(e), _message(e)) for e in _errors(values_validator(path), values)]


# ---------------------------------------------------------------------------------------------

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_QUALIFIED_NAME = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                   r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Names the API server restricts further than a DNS subdomain.
_DNS1035_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
_NAME_RULES = {"Service": _DNS1035_LABEL, "Namespace": _DNS_LABEL}
_PATTERN_NAMES = {
    _DNS_LABEL: "DNS label (lowercase letters, digits and '-', at most 63)",
    _DNS_SUBDOMAIN: "DNS subdomain (lowercase letters, digits, '-' and '.', at most 253)",
    _DNS1035_LABEL: "DNS-1035 label (starts with a letter; lowercase letters, digits and '-', at most 63)",
    _QUALIFIED_NAME: "key ([prefix/]name; name at most 63 of letters, digits, '-', '_' and '.')",
    _LABEL_VALUE: "label value (at most 63 of letters, digits, '-', '_' and '.', alphanumeric at both ends)",
}


def _metadata_validator(kind: str | None) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": _NAME_RULES.get(kind, _DNS_SUBDOMAIN)},
            "namespace": {"type": "string", "pattern": _DNS_LABEL},
            "labels": {"type": "object", "propertyNames": {"pattern": _QUALIFIED_NAME},
                       "additionalProperties": {"type": "string", "pattern": _LABEL_VALUE}},
            "annotations": {"type": "object", "propertyNames": {"pattern": _QUALIFIED_NAME},
                            "additionalProperties": {"type": "string"}},
        },
    })


_METADATA: dict[str | None, jsonschema.Draft7Validator] = {}


def _metadata_for(kind: str) -> jsonschema.Draft7Validator:
    """Built on first use, not at import: a process that never validates never pays for it, and
    the mutation benchmark's workers (forked after import) run the builder they test."""
    rule = kind if kind in _NAME_RULES else None
    if rule not in _METADATA:   # threads of render_many may both build it: same result, no harm
        _METADATA[rule] = _metadata_validator(rule)
    return _METADATA[rule]


def _validate_object(obj: Any, schemas_dir: Path | None) -> list[Problem]:
    if not isinstance(obj, dict) or not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return [Problem("?", "", "", "", f"not a Kubernetes object (needs apiVersion and kind): {str(obj)[:80]}")]
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    kind, name, ns = obj["kind"], str(meta.get("name", "")), str(meta.get("namespace", ""))
    try:
        validator = object_validator(obj["apiVersion"], kind, schemas_dir)
    except NoSchema as err:
        if (obj["apiVersion"], kind) == PROMETHEUS_RULE and (TOOLS_BIN / "promtool").exists():
            return [Problem(kind, name, ns, "spec", msg) for msg in check_rules(obj.get("spec") or {})]
        return [Problem(kind, name, ns, "", str(err))]
    found = [(_path(e), _message(e)) for e in _errors(validator, obj)]
    if "metadata" not in obj:
        found.append(("", "'metadata' is a required property"))
    else:
        meta_validator = _metadata_for(kind)
        found += [(_path(e, "metadata"), _message(e)) for e in _errors(meta_validator, obj["metadata"])]
    if kind == "ConfigMap" and is_dashboard(obj):
        found += dashboard_problems(obj.get("data") or {})
    # the kind's schema and the metadata check may both report a wrong label type
    return [Problem(kind, name, ns, path, msg) for path, msg in dict.fromkeys(found)]


# The Prometheus Operator's PrometheusRule CRD is not among the pinned upstream schemas; without it
# the rules themselves are checked by the real promtool (the pinned Prometheus, a go-tool), which
# parses every expression and template as Prometheus will.
PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")


def check_rules(spec: dict) -> list[str]:
    """`promtool check rules` on a PrometheusRule's spec (a Prometheus rule file): its complaints."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump({"groups": spec.get("groups", [])}, sort_keys=False))
        proc = tools.run("promtool", "check", "rules", str(path), check=False, timeout=60)
    if proc.returncode == 0:
        return []
    return [line.strip() for line in (proc.stderr or proc.stdout).splitlines()
            if line.strip() and not line.startswith(("Checking", "FAILED:", "SUCCESS"))] or ["promtool refused the rules"]


# Grafana dashboards travel in ConfigMaps the Grafana sidecar picks up by this label
# (lightrail.monitoring); each .json key is checked against the dashboard JSON Schema of the
# schemaVersion it declares, which scripts/setup installs (scripts/install_dashboard_schema.py).
DASHBOARD_LABEL = ("grafana_dashboard", "1")


def is_dashboard(obj: dict) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(DASHBOARD_LABEL[0]) == DASHBOARD_LABEL[1]


@functools.lru_cache(maxsize=None)
def _dashboard_validator(path: Path) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def dashboard_problems(data: dict) -> list[tuple[str, str]]:
    """(path, message) for every problem of the dashboards in a ConfigMap's data."""
    out = []
    for key, text in data.items():
        if not key.endswith(".json"):
            continue
        where = f"data[{key}]"
        try:
            board = json.loads(text)
        except (TypeError, ValueError) as err:
            out.append((where, f"not JSON: {err}"))
            continue
        version = board.get("schemaVersion") if isinstance(board, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            out.append((where, f"a Grafana dashboard declares its schemaVersion (an integer), not {version!r}"))
            continue
        path = TOOLS_SCHEMAS / f"grafana-dashboard-v{version}.json"
        if not path.exists():
            out.append((where, f"no schema for Grafana dashboard schemaVersion {version}: {path} is not installed "
                               "(scripts/setup installs the one pinned in patterns/versions.yaml "
                               "`grafana-dashboard:`)"))
            continue
        found = [(_path(leaf, where), _message(leaf)) for e in _dashboard_validator(path).iter_errors(board)
                 for leaf in _closest_branch(e)]
        out += found or _panel_problems(board, version, where)   # a valid dashboard's panels, by their plugins
    return out


def _panel_problems(board: dict, version: int, where: str) -> list[tuple[str, str]]:
    """A panel's `options` and `fieldConfig.defaults.custom` are its plugin's: checked against the
    plugin's `Options` and `FieldConfig` (grafana-dashboard-v<N>-<type>.json); a row's are its panels'."""
    panels = []
    for i, panel in enumerate(board.get("panels", [])):
        if panel["type"] == "row":
            panels += [(f"panels[{i}].panels[{j}]", p) for j, p in enumerate(panel["panels"])]
        else:
            panels.append((f"panels[{i}]", panel))
    out = []
    for at, panel in panels:
        path = TOOLS_SCHEMAS / f"grafana-dashboard-v{version}-{panel['type']}.json"
        if not path.exists():
            out.append((f"{where}.{at}.type", f"no schema for panel type {panel['type']!r} of schemaVersion {version}: "
                                              f"{path} is not installed (patterns/versions.yaml `grafana-dashboard:` "
                                              "`panels` lists the panel types scripts/setup installs)"))
            continue
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        for part, definition, value in (("options", "Options", panel.get("options", {})),
                                        ("fieldConfig.defaults.custom", "FieldConfig", custom)):
            out += [(_path(leaf, f"{where}.{at}.{part}"), _message(leaf))
                    for e in _plugin_validator(path, definition).iter_errors(value) for leaf in _closest_branch(e)]
    return out


@functools.lru_cache(maxsize=None)
def _plugin_validator(path: Path, definition: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{definition}",
                                       "definitions": json.loads(path.read_text())["definitions"]})


def _closest_branch(err: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """Leaf errors of a failed anyOf (a panel is a Panel or a RowPanel): those of the branch that
    failed least (and, of equals, deepest), so a timeseries panel's bad field is reported, not that
    it is no row."""
    if not err.context:
        return [err]
    branches: dict = {}
    for e in err.context:
        branches.setdefault(e.relative_schema_path[0], []).append(e)
    closest = min(branches.values(), key=lambda errs: (len(errs), -max(len(e.path) for e in errs)))
    return [leaf for e in closest for leaf in _closest_branch(e)]


def _errors(validator, instance) -> list[jsonschema.ValidationError]:
    """Leaf errors: for a failed anyOf/oneOf, the branch that got furthest."""
    out = []
    for err in validator.iter_errors(instance):
        while err.context:
            err = jsonschema.exceptions.best_match(err.context)
        out.append(err)
    return sorted(out, key=lambda e: [str(p) for p in e.absolute_path])


def _path(err: jsonschema.ValidationError, prefix: str = "") -> str:
    """spec.containers[0].name, the way kubectl prints field paths."""
    parts = prefix
    for p in err.absolute_path:
        parts += f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p))
    return parts


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "format" and err.validator_value in INT_RANGES:
        low, high = INT_RANGES[err.validator_value]
        return f"{err.instance} does not fit {err.validator_value} (the API server accepts {low} to {high})"
    if err.validator == "pattern" and err.validator_value in _PATTERN_NAMES:
        return f"{err.instance!r} is not a valid {_PATTERN_NAMES[err.validator_value]}"
    return err.message if len(err.message) < 300 else err.message[:297] + "..."
