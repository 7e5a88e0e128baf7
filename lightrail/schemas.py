"""Where validation schemas come from, and how they become (cached) jsonschema validators.

- Built-in kinds: the strict OpenAPI schemas bundled by kubernetes-validate, for the Kubernetes
  version pinned in patterns/versions.yaml. Its own `validate()` re-reads the 1.2 MB definitions
  file for every object (~5 ms each); here they are loaded once and each kind's validator is kept.
- Custom resources: the CRDs listed under `crds:` in patterns/versions.yaml, read from
  LIGHTRAIL_SCHEMAS. Parsing the YAML costs ~1 s for all of them (the KServe file alone is 4.4 MB),
  so each file's CRDs are also kept as JSON under ~/.cache/lightrail/schemas (~30 ms to load).
- Chart values: the values.schema.json files listed under `chart-schemas:`.
Anything without a schema raises NoSchema with a message that says where we looked.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from lightrail.catalog import load_catalog
from lightrail.settings import cache_dir as settings_cache_dir

_K8S_SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
_CACHE_FORMAT = "1"      # bump when the cached JSON changes shape
_lock = threading.RLock()  # renders are validated from several threads (benchmarks/render_matrix.py)


class NoSchema(LookupError):
    """No schema is available; the message names what was looked for and where."""


def k8s_version() -> str:
    return str(load_catalog().versions["kubernetes"])


def object_validator(api_version: str, kind: str, schemas_dir: Path | None):
    """The validator for one apiVersion/kind: built-in first, then the CRDs in schemas_dir."""
    validator = _builtin_validator(api_version, kind)
    if validator is not None:
        return validator
    not_builtin = f"no schema for {api_version} {kind}: not a built-in kind of Kubernetes {k8s_version()}"
    if "/" not in api_version:
        raise NoSchema(not_builtin)
    if schemas_dir is None:
        raise NoSchema(f"{not_builtin} and no CRD directory is set (set LIGHTRAIL_SCHEMAS=DIR)")
    if not Path(schemas_dir).is_dir():
        raise NoSchema(f"{not_builtin} and the CRD directory {schemas_dir} does not exist (set LIGHTRAIL_SCHEMAS=DIR)")
    group, version = api_version.rsplit("/", 1)
    with _lock:
        crd = _crd_index(str(schemas_dir)).get((group, kind))
    if crd is None:
        files = _crd_files(str(schemas_dir))
        missing = [rel for rel, path in files if not path.exists()]
        raise NoSchema(f"{not_builtin} and none of the {len(files)} CRD files listed under `crds:` in "
                       f"patterns/versions.yaml defines it in {schemas_dir}"
                       + (f" (missing: {', '.join(missing)})" if missing else ""))
    return _crd_validator(crd, version)


@dataclass(frozen=True, eq=False)
class Crd:
    """One CustomResourceDefinition and the file (relative to the schemas dir) it came from."""
    source: str
    kind: str
    versions: dict[str, dict]   # name -> the CRD's version entry (schema, served, ...)


def _crd_validator(crd: Crd, version: str):
    entry = crd.versions.get(version)
    if entry is None:
        raise NoSchema(f"{crd.source} defines {crd.kind} in versions {', '.join(crd.versions)}, not {version}")
    if not entry.get("served", True):
        served = [v for v, e in crd.versions.items() if e.get("served", True)]
        raise NoSchema(f"version {version} of {crd.kind} is not served by {crd.source} (served: {', '.join(served)})")
    return _validator_for_version(crd, version)


@functools.lru_cache(maxsize=None)
def _validator_for_version(crd: Crd, version: str):
    openapi = (crd.versions[version].get("schema") or {}).get("openAPIV3Schema")
    if openapi is None:
        raise NoSchema(f"{crd.source}: version {version} of {crd.kind} has no openAPIV3Schema")
    return _CrdValidator(crd_json_schema(openapi), format_checker=FORMATS)


# --- integer formats -------------------------------------------------------------------------

# The API server decodes `format: int32/int64` fields into Go integers of that size and rejects
# what does not fit; JSON Schema alone checks only "integer".
INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}
FORMATS = jsonschema.FormatChecker(formats=())
for _fmt, (_lo, _hi) in INT_RANGES.items():
    FORMATS.checks(_fmt)(lambda v, lo=_lo, hi=_hi: not isinstance(v, int) or isinstance(v, bool) or lo <= v <= hi)


# --- built-in kinds -------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _k8s_schema_dir() -> Path:
    """kubernetes-validate's strict schemas for the newest minor release not after the pinned one."""
    want = tuple(int(x) for x in k8s_version().split(".")[:2])
    dirs = sorted((tuple(int(x) for x in d.name[1:].split("-")[0].split(".")[:2]), d)
                  for d in _K8S_SCHEMAS.glob("v*-local-strict"))
    usable = [d for v, d in dirs if v <= want]
    if not usable:
        raise NoSchema(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for "
                       f"Kubernetes {k8s_version()} (patterns/versions.yaml `kubernetes:`)")
    return usable[-1]


@functools.lru_cache(maxsize=None)
def _k8s_registry() -> Registry:
    defs = json.loads((_k8s_schema_dir() / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@functools.lru_cache(maxsize=None)
def _builtin_validator(api_version: str, kind: str):
    # kubernetes-validate names files <kind>-<first label of the group>-<version>.json ...
    group, _, version = api_version.rpartition("/")
    path = _k8s_schema_dir() / f"{kind.lower()}-{group.split('.')[0] + '-' if group else ''}{version}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    # ... so a CRD group such as networking.istio.io collides with networking.k8s.io: check the group.
    gvks = schema.get("x-kubernetes-group-version-kind") or []
    if gvks and not any(g.get("group", "") == group and g.get("kind") == kind for g in gvks):
        return None
    with _lock:
        registry = Resource.from_contents(schema) @ _k8s_registry()
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=FORMATS)


# --- CRDs ------------------------------------------------------------------------------------


def _crd_files(schemas_dir: str) -> list[tuple[str, Path]]:
    crds = load_catalog().versions.get("crds", {})
    return [(c["schema"], Path(schemas_dir) / c["schema"]) for c in crds.values() if c.get("schema")]


@functools.lru_cache(maxsize=None)
def _crd_index(schemas_dir: str) -> dict[tuple[str, str], Crd]:
    """(group, kind) -> Crd. A kind defined in two files (gateway-api standard and experimental)
    comes from the one listed first in versions.yaml, as a cluster has one CRD per kind."""
    index: dict[tuple[str, str], Crd] = {}
    for rel, path in _crd_files(schemas_dir):
        if not path.exists():
            continue
        for doc in _parsed(path):
            spec = doc["spec"]
            key = (spec["group"], spec["names"]["kind"])
            if key not in index:
                index[key] = Crd(rel, key[1], {v["name"]: v for v in spec.get("versions", [])})
    return index


def _parsed(path: Path) -> list[dict]:
    """The CRD documents of one file, from the JSON cache when the file is unchanged."""
    st = path.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{_CACHE_FORMAT}"
    prefix = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    cache_dir = settings_cache_dir("schemas")
    cache = cache_dir / f"{prefix}.{hashlib.sha256(stamp.encode()).hexdigest()[:12]}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    with path.open() as fh:
        docs = [d for d in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
                and (d.get("spec") or {}).get("names")]
    try:   # a cache we cannot write (read-only home) only costs time
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{prefix}.*.json"):
            stale.unlink(missing_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(docs))
        os.replace(tmp, cache)
    except OSError:
        pass
    return docs


def _list_map_keys(validator, keys, instance, schema):
    """x-kubernetes-list-type: map — the API server rejects two items with the same keys."""
    if not validator.is_type(instance, "array"):
        return
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if isinstance(item, dict):
            key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
            if key in seen:
                names = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
                yield jsonschema.ValidationError(f"items {seen[key]} and {i} have the same {names}")
            seen.setdefault(key, i)


_CrdValidator = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                             {"x-kubernetes-list-map-keys": _list_map_keys})


def crd_json_schema(openapi: dict) -> dict:
    """A CRD's structural openAPIV3Schema as a JSON Schema that rejects unknown fields.

    The top-level metadata is left to lightrail.validate, which checks it for every kind.
    """
    schema = _convert(copy.deepcopy(openapi))
    props = schema.setdefault("properties", {})
    props.update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
    schema["additionalProperties"] = False
    return schema


def _convert(node: Any) -> Any:
    """OpenAPI v3 + Kubernetes extensions -> JSON Schema draft 7, in place, bottom-up."""
    if not isinstance(node, dict):
        return node
    for key in ("properties", "patternProperties"):
        if key in node:
            node[key] = {k: _convert(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = _convert(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [_convert(v) for v in node[key]]
    nullable = node.pop("nullable", False)
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}] + ([{"type": "null"}] if nullable else [])
    elif nullable and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-embedded-resource") and "properties" in node:
        for field in ("apiVersion", "kind"):
            node["properties"].setdefault(field, {"type": "string"})
        node["properties"].setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    # Structural pruning drops every field a schema does not name, unless told to keep them.
    if (node.get("type") == "object" and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        node["uniqueItems"] = True
    for bound in ("Minimum", "Maximum"):
        if isinstance(node.get(f"exclusive{bound}"), bool):
            if node.pop(f"exclusive{bound}") and bound.lower() in node:
                node[f"exclusive{bound}"] = node.pop(bound.lower())
    return node


# --- chart values ----------------------------------------------------------------------------


def values_schema(chart: str, schemas_dir: Path | None) -> Path | None:
    """The chart's values schema; None when versions.yaml lists none for it (upstream ships none).

    Raises NoSchema when one is listed but cannot be read: that must never pass silently.
    """
    rel = load_catalog().versions.get("chart-schemas", {}).get(chart)
    if not rel:
        return None
    if schemas_dir is None:
        raise NoSchema(f"values schema {rel} for chart {chart}: no schemas directory is set "
                       "(set LIGHTRAIL_SCHEMAS=DIR)")
    path = Path(schemas_dir) / rel
    if not path.is_file():
        raise NoSchema(f"values schema {rel} for chart {chart} not found in {schemas_dir} (set LIGHTRAIL_SCHEMAS=DIR)")
    return path


@functools.lru_cache(maxsize=None)
def values_validator(path: Path):
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)
