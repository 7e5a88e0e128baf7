"""Where things live. Every location a user may change comes from an environment variable."""
from __future__ import annotations

import os
from pathlib import Path

from lightrail.errors import LightrailError

ROOT = Path(__file__).resolve().parent.parent
PATTERNS_DIR = ROOT / "patterns"
HELMFILES_DIR = ROOT / "helmfiles"
KUSTOMIZE_DIR = ROOT / "kustomize"
TOOLS_BIN = ROOT / ".tools" / "bin"


def charts_dir(override: str | None = None) -> Path | None:
    """LIGHTRAIL_CHARTS (or --charts): a directory holding <chart-name>/ or <chart-name>.tgz for every upstream chart."""
    return _given_dir(override, "--charts", "LIGHTRAIL_CHARTS")


def schemas_dir(override: str | None = None) -> Path | None:
    """LIGHTRAIL_SCHEMAS (or --schemas): upstream CRDs and chart values schemas (default ../shared/upstream)."""
    given = _given_dir(override, "--schemas", "LIGHTRAIL_SCHEMAS")
    if given:
        return given
    default = ROOT.parent / "shared" / "upstream"
    return default if default.is_dir() else None


def _given_dir(override: str | None, flag: str, variable: str) -> Path | None:
    """The directory from the flag, else the variable; one that is not a directory is refused naming where it came from."""
    source, value = (flag, override) if override else (variable, os.environ.get(variable))
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise LightrailError(f"{source}={value}: {'not a directory' if path.exists() else 'no such directory'}",
                             fix=f"point {flag} or {variable} at a directory, or leave both unset")
    return path


def results_dir(override: str | None = None) -> Path:
    """LIGHTRAIL_RESULTS: where benchmark runs are stored (default benchmarks/results)."""
    value = override or os.environ.get("LIGHTRAIL_RESULTS")
    return Path(value).expanduser().resolve() if value else ROOT / "benchmarks" / "results"


def harnesses_dir() -> Path:
    """LIGHTRAIL_HARNESSES: venvs of the optional benchmark harnesses (default ~/.cache/lightrail/harnesses)."""
    value = os.environ.get("LIGHTRAIL_HARNESSES")
    return Path(value).expanduser().resolve() if value else Path.home() / ".cache" / "lightrail" / "harnesses"


def cache_dir(kind: str) -> Path:
    """~/.cache/lightrail/<kind> (or $XDG_CACHE_HOME/lightrail/<kind>): renders, schemas, harnesses."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightrail" / kind
