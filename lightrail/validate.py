"""Offline validation of rendered objects and chart values against the real upstream schemas.

- Built-in kinds: the Kubernetes OpenAPI schemas bundled by kubernetes-validate, strict (unknown
  fields rejected), for the Kubernetes version pinned in patterns/versions.yaml.
- Custom resources: their CRD's openAPIV3Schema from LIGHTRAIL_SCHEMAS, turned into a JSON Schema
  that rejects unknown fields wherever the structural schema does not preserve them.
- Chart values: the charts' values.schema.json from LIGHTRAIL_SCHEMAS.
A kind with no schema is a problem, never a silent pass. Schemas are parsed once per process
and the parsed CRD files are cached as JSON under ~/.cache/lightrail/schemas.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.settings import schemas_dir as default_schemas_dir

_K8S_SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
_lock = threading.RLock()


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
    """Every problem in every object (an empty list means all are valid)."""
    schemas_dir = schemas_dir if schemas_dir is not None else default_schemas_dir()
    problems: list[Problem] = []
    for obj in objects:
        problems.extend(_validate_object(obj, schemas_dir))
    return problems


def check(objects: Iterable[dict], *, schemas_dir: Path | None = None) -> None:
    """Raise LightrailError listing every problem, or return quietly when all objects are valid."""
    problems = validate_objects(objects, schemas_dir=schemas_dir)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise LightrailError(f"{len(problems)} invalid object(s):\n  {listing}")


def values_schema_path(chart: str, *, schemas_dir: Path | None = None) -> Path | None:
    """The chart's values.schema.json named in versions.yaml `chart-schemas`, or None if it has none."""
    schemas_dir = schemas_dir if schemas_dir is not None else default_schemas_dir()
    rel = load_catalog().versions.get("chart-schemas", {}).get(chart)
    if not rel or schemas_dir is None or not (Path(schemas_dir) / rel).exists():
        return None
    return Path(schemas_dir) / rel


def validate_values(chart: str, values: dict, *, schemas_dir: Path | None = None,
                    required: bool = False) -> list[Problem]:
    """Problems in a chart's values; a chart without a values schema is one only when `required`."""
    path = values_schema_path(chart, schemas_dir=schemas_dir)
    if path is None:
        if not required:
            return []
        return [Problem("values", chart, "", "", f"no values schema for chart {chart} in {schemas_dir or '(unset)'} "
                        "(set LIGHTRAIL_SCHEMAS)")]
    validator = _values_validator(str(path))
    return [Problem("values", chart, "", _path(e), _message(e)) for e in _errors(validator, values)]


# ---------------------------------------------------------------------------------------------


def _validate_object(obj: Any, schemas_dir: Path | None) -> list[Problem]:
    if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
        return [Problem("?", "", "", "", f"not a Kubernetes object (needs apiVersion and kind): {str(obj)[:80]}")]
    meta = obj.get("metadata") or {}
    kind, name, ns = obj["kind"], meta.get("name", ""), meta.get("namespace", "")
    validator = _builtin_validator(obj["apiVersion"], kind)
    if validator is None:
        validator = _crd_validator(str(schemas_dir) if schemas_dir else None, obj["apiVersion"], kind)
    if validator is None:
        where = f"the CRDs in {schemas_dir}" if schemas_dir else "no CRD directory (set LIGHTRAIL_SCHEMAS)"
        return [Problem(kind, name, ns, "", f"no schema for {obj['apiVersion']} {kind}: not a built-in kind of "
                        f"Kubernetes {_k8s_version()} and not found in {where}")]
    return [Problem(kind, name, ns, _path(e), _message(e)) for e in _errors(validator, obj)]


def _errors(validator, instance) -> list[jsonschema.ValidationError]:
    """Leaf errors: for anyOf/oneOf failures report the branch that got furthest."""
    out = []
    for err in validator.iter_errors(instance):
        while err.context:
            err = jsonschema.exceptions.best_match(err.context)
        out.append(err)
    return sorted(out, key=lambda e: [str(p) for p in e.absolute_path])


def _path(err: jsonschema.ValidationError) -> str:
    parts = ""
    for p in err.absolute_path:
        parts += f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p))
    return parts


def _message(err: jsonschema.ValidationError) -> str:
    msg = err.message
    return msg if len(msg) < 300 else msg[:297] + "..."


def _k8s_version() -> str:
    return str(load_catalog().versions["kubernetes"])


@functools.lru_cache(maxsize=None)
def _k8s_schema_dir() -> Path:
    want = tuple(int(x) for x in _k8s_version().split(".")[:2])
    dirs = sorted((tuple(int(x) for x in d.name[1:].split("-")[0].split(".")[:2]), d)
                  for d in _K8S_SCHEMAS.glob("v*-local-strict"))
    usable = [d for v, d in dirs if v <= want]
    if not usable:
        raise LightrailError(f"kubernetes-validate has no schemas for Kubernetes {_k8s_version()}")
    return usable[-1]


@functools.lru_cache(maxsize=None)
def _k8s_registry() -> Registry:
    defs = json.loads((_k8s_schema_dir() / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@functools.lru_cache(maxsize=None)
def _builtin_validator(api_version: str, kind: str):
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _k8s_schema_dir() / f"{kind.lower()}-{group_version}.json"
    if "/" in api_version and "-" not in group_version:
        return None
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    # kubernetes-validate keys schemas by group *prefix*: make sure the full group really is built in.
    gvk = schema.get("x-kubernetes-group-version-kind") or []
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    if gvk and not any(g.get("group", "") == group and g.get("kind") == kind for g in gvk):
        return None
    with _lock:
        registry = Resource.from_contents(schema) @ _k8s_registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- CRDs ------------------------------------------------------------------------------------


def _crd_files(schemas_dir: str) -> list[Path]:
    crds = load_catalog().versions.get("crds", {})
    return [Path(schemas_dir) / c["schema"] for c in crds.values() if c.get("schema")]


def _parsed(path: Path) -> list[dict]:
    """CRD documents of one file; the YAML parse (slow for multi-MB files) is cached as JSON."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightrail" / "schemas" / f"{key}.json"
    if cache.exists():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as fh:
        docs = [d for d in yaml.load_all(fh, Loader=loader)
                if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
                and (d.get("spec") or {}).get("names")]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(docs))
    os.replace(tmp, cache)
    return docs


@functools.lru_cache(maxsize=None)
def _crd_index(schemas_dir: str) -> dict[tuple[str, str, str], dict]:
    """(group, version, kind) -> openAPIV3Schema; the first file listed in versions.yaml wins."""
    index: dict[tuple[str, str, str], dict] = {}
    for path in _crd_files(schemas_dir):
        if not path.exists():
            continue
        for crd in _parsed(path):
            spec = crd["spec"]
            for v in spec.get("versions", []):
                schema = (v.get("schema") or {}).get("openAPIV3Schema")
                key = (spec["group"], v["name"], spec["names"]["kind"])
                if schema and key not in index:
                    index[key] = schema
    return index


@functools.lru_cache(maxsize=None)
def _crd_validator(schemas_dir: str | None, api_version: str, kind: str):
    if not schemas_dir or "/" not in api_version:
        return None
    group, version = api_version.rsplit("/", 1)
    with _lock:
        schema = _crd_index(schemas_dir).get((group, version, kind))
    if schema is None:
        return None
    return jsonschema.Draft7Validator(crd_json_schema(schema))


_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def crd_json_schema(openapi: dict) -> dict:
    """A CRD's structural openAPIV3Schema as a JSON Schema that rejects unknown fields."""
    schema = _convert(copy.deepcopy(openapi))
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = _METADATA
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


def _convert(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    for key in ("properties", "patternProperties", "definitions"):
        if key in node:
            node[key] = {k: _convert(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = _convert(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [_convert(v) for v in node[key]]
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-embedded-resource") and "properties" in node:
        node["properties"].setdefault("apiVersion", {"type": "string"})
        node["properties"].setdefault("kind", {"type": "string"})
        node["properties"].setdefault("metadata", {"type": "object"})
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    for bound in ("Minimum", "Maximum"):
        if isinstance(node.get(f"exclusive{bound}"), bool):
            if node.pop(f"exclusive{bound}") and bound.lower() in node:
                node[f"exclusive{bound}"] = node.pop(bound.lower())
    return node


@functools.lru_cache(maxsize=None)
def _values_validator(path: str):
    schema = json.loads(Path(path).read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)
