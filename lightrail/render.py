"""Render a plan with the real tools (helmfile/helm or kustomize), validate it, write it out.

Each stack module provides `render(plan, workdir, charts=None) -> Rendered`; this module picks
the stack, validates every object and writes the result only when everything is valid.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from lightrail.errors import LightrailError
from lightrail.plan import Plan
from lightrail.settings import HELMFILES_DIR, KUSTOMIZE_DIR, PATTERNS_DIR, ROOT, TOOLS_BIN, cache_dir

MARKER = ".lightrail-render"
# Everything a render depends on besides the plan: when none of it changes, the result is reused.
_INPUTS = (HELMFILES_DIR, KUSTOMIZE_DIR, PATTERNS_DIR, ROOT / "lightrail", TOOLS_BIN)


@dataclass
class Rendered:
    """Objects in apply order, the inputs the tools were given, and what the user should know."""

    objects: list[dict]
    artifacts: dict[str, str] = field(default_factory=dict)   # relative path -> text (helmfile.yaml, values, kustomization)
    notes: list[str] = field(default_factory=list)
    complete: bool = True   # False when upstream charts were not available (llmd without LIGHTRAIL_CHARTS)


def render(plan: Plan, *, charts: Path | None = None, offline: bool = False) -> Rendered:
    """Render the plan with its stack's real tools in a scratch directory.

    `offline` matters to llmd only: without charts it checks the composed state and values
    instead of fetching charts (kustomize needs nothing from the network).
    """
    with tempfile.TemporaryDirectory(prefix="lightrail-render-") as tmp:
        if plan.stack == "llmd":
            from lightrail.llmd.render import render as llmd_render
            return llmd_render(plan, Path(tmp), charts=charts, offline=offline)
        from lightrail.kserve.render import render as kserve_render
        return kserve_render(plan, Path(tmp))


def render_validated(plan: Plan, *, charts: Path | None = None, schemas: Path | None = None,
                     offline: bool = False) -> Rendered:
    """Render and validate every object; raise LightrailError listing all problems.

    A valid result is cached under ~/.cache/lightrail/render keyed by the plan and the
    fingerprint of every input file (set LIGHTRAIL_NO_CACHE=1 to bypass).
    """
    from lightrail.validate import validate_objects

    key = _cache_key(plan, charts, schemas, offline)
    cached = _cache_get(key)
    if cached:
        return cached
    result = render(plan, charts=charts, offline=offline)
    problems = validate_objects(result.objects, schemas_dir=schemas)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise LightrailError(f"{len(problems)} invalid object(s) in the {plan.stack} render:\n  {listing}")
    _cache_put(key, result)
    return result


def _tree_fingerprint(paths) -> str:
    h = hashlib.sha256()
    for root in paths:
        if root is None or not Path(root).exists():
            h.update(f"{root}:absent".encode())
            continue
        files = [Path(root)] if Path(root).is_file() else sorted(p for p in Path(root).rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _cache_key(plan: Plan, charts: Path | None, schemas: Path | None, offline: bool) -> str | None:
    if os.environ.get("LIGHTRAIL_NO_CACHE"):
        return None
    h = hashlib.sha256(json.dumps([plan.to_dict(), offline], sort_keys=True).encode())
    h.update(_tree_fingerprint([*_INPUTS, charts, schemas]).encode())
    return h.hexdigest()


def _cache_get(key: str | None) -> Rendered | None:
    """A cached render, or None when there is none or it is not one (a corrupt entry is rebuilt, never fatal)."""
    path = cache_dir("render") / f"{key}.json" if key else None
    try:
        data = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
    return Rendered(**data) if _is_rendered(data) else None


def _is_rendered(data) -> bool:
    """The exact shape `_cache_put` writes."""
    def strings(items):
        return all(isinstance(i, str) for i in items)

    return (isinstance(data, dict) and set(data) == {"objects", "artifacts", "notes", "complete"}
            and isinstance(data["objects"], list) and all(isinstance(o, dict) for o in data["objects"])
            and isinstance(data["artifacts"], dict) and strings(data["artifacts"]) and strings(data["artifacts"].values())
            and isinstance(data["notes"], list) and strings(data["notes"]) and isinstance(data["complete"], bool))


def _cache_put(key: str | None, result: Rendered) -> None:
    if not key:
        return
    directory = cache_dir("render")
    try:   # a cache we cannot write (read-only home) only costs time
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(asdict(result)))
        os.replace(tmp, directory / f"{key}.json")
    except OSError:
        pass


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """YAML without anchors and aliases (`&id001`): every file reads on its own, as a person wrote it."""

    def ignore_aliases(self, data):
        return True


_DUMPER = _Dumper


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML loader that refuses duplicate keys (two documents run together must not merge)."""


def _strict_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dupes:
        raise LightrailError(f"rendered YAML has duplicate keys {', '.join(dupes)} near line {node.start_mark.line + 1}")
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def load_manifests(text: str) -> list[dict]:
    """The objects in a multi-document YAML stream, skipping empty documents."""
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def to_yaml(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)


def dump_yaml(data) -> str:
    """YAML for tool inputs (values, kustomizations), with the fast C dumper when present."""
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False)


_MARKER_HEAD = "# written by `invoke render`; the next render into this directory replaces these files (and no others):\n"


def check_out(out: Path) -> Path:
    """Refuse an --out that `write` would refuse, before any rendering work."""
    out = Path(out)
    _our_files(out)
    return out


def _our_files(out: Path) -> list[str]:
    """The files an earlier render wrote into `out` (listed in its marker); refuse a foreign directory."""
    if out.exists() and not out.is_dir():
        raise LightrailError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return []
    if not (out / MARKER).is_file():
        raise LightrailError(f"--out {out} is not empty and was not written by `invoke render`",
                             fix="choose a new or empty directory")
    lines = (out / MARKER).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#") and ".." not in Path(line).parts
            and not Path(line).is_absolute()]


def write(rendered: Rendered, out: Path) -> list[Path]:
    """Write manifests.yaml and the artifacts into `out`.

    Everything is written to a staging directory first; only then are the files of an earlier
    render (those its marker lists) removed and the new ones moved in. Files the user added to
    the directory are never touched.
    """
    out = Path(out)
    try:
        return _write(rendered, out)
    except OSError as err:
        raise LightrailError(f"cannot write --out {out}: {err.strerror or err}") from None


def _write(rendered: Rendered, out: Path) -> list[Path]:
    previous = _our_files(out)
    files = {"manifests.yaml": to_yaml(rendered.objects), **rendered.artifacts}
    files[MARKER] = _MARKER_HEAD + "".join(f"{rel}\n" for rel in sorted(files))
    theirs = sorted(rel for rel in files if rel != MARKER and rel not in previous and (out / rel).exists())
    if theirs:
        raise LightrailError(f"--out {out} holds {', '.join(theirs)}, which `invoke render` did not write",
                             fix="move them away or choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".lightrail-out-", dir=out.parent))
    try:
        for rel, text in files.items():
            path = stage / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        out.mkdir(exist_ok=True)   # mode from the user's umask (not mkdtemp's 0700)
        for rel in previous:
            (out / rel).unlink(missing_ok=True)
            _prune_empty(out, (out / rel).parent)
        for rel in files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, out / rel)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return sorted(out / rel for rel in files)


def _prune_empty(root: Path, directory: Path) -> None:
    """Remove directories an earlier render left empty, up to (not including) root."""
    while directory != root and root in directory.parents and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent
