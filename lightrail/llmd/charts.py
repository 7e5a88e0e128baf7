"""Local upstream charts (LIGHTRAIL_CHARTS) checked against the pins before helm sees them.

A chart of another version would render "all valid" while `plan` shows the pinned one, and a
source directory whose dependencies were never built fails deep inside helmfile. Both are
refused here with what to do instead.
"""
from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

import yaml

from lightrail.errors import LightrailError


def _read(path: Path) -> tuple[dict, set[str]]:
    """Chart.yaml of a chart directory or archive, and the names under its charts/ directory."""
    if path.is_dir():
        meta = path / "Chart.yaml"
        if not meta.is_file():
            raise LightrailError(f"{path} is not a chart (no Chart.yaml)")
        bundled = {p.name for p in (path / "charts").iterdir()} if (path / "charts").is_dir() else set()
        return yaml.safe_load(meta.read_text()) or {}, bundled
    try:
        with tarfile.open(path) as tar:
            names = [PurePosixPath(n) for n in tar.getnames()]
            top = next((n for n in names if len(n.parts) == 2 and n.name == "Chart.yaml"), None)
            if top is None:
                raise LightrailError(f"{path} is not a chart archive (no <name>/Chart.yaml)")
            meta = yaml.safe_load(tar.extractfile(str(top)).read()) or {}
    except tarfile.ReadError:   # its message lists every compression tried, one per line
        raise LightrailError(f"{path} is not a readable chart archive (not a gzip, bzip2 or xz tar); valid: a chart "
                             "directory or an archive as `helm pull` gives it") from None
    except (tarfile.TarError, OSError) as err:
        raise LightrailError(f"{path} is not a readable chart archive: {err}") from None
    bundled = {n.parts[2] for n in names if len(n.parts) > 2 and n.parts[:2] == (top.parts[0], "charts")}
    return meta, bundled


def _same(version: str, pin: str) -> bool:
    return str(version).removeprefix("v") == str(pin).removeprefix("v")


def check(path: Path, name: str, pin: str) -> None:
    """Refuse a local chart that is not the pinned version or lacks its dependencies."""
    meta, bundled = _read(path)
    if meta.get("name") != name:
        raise LightrailError(f"{path} holds chart {meta.get('name')!r}, expected {name}")
    if not _same(meta.get("version", ""), pin):
        raise LightrailError(
            f"chart {name} in {path} is version {meta.get('version')}, but {pin} is pinned (patterns/versions.yaml)",
            fix=f"put {name} {pin} there (helm pull ... --version {pin}), or point --charts / LIGHTRAIL_CHARTS "
                "at the pinned charts")
    missing = [d["name"] for d in meta.get("dependencies") or []
               if d["name"] not in bundled and not any(b.startswith(f"{d['name']}-") and b.endswith(".tgz")
                                                       for b in bundled)]
    if missing:
        where = f"run helm dependency build in {path}" if path.is_dir() else \
            "package the chart after `helm dependency build` (as `helm pull` gives it)"
        raise LightrailError(f"chart {name} in {path} lacks its dependencies {', '.join(missing)} under charts/",
                             fix=where)
