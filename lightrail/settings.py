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
# Schemas scripts/setup installs from package registries (the Grafana dashboard's, from npm).
TOOLS_SCHEMAS = ROOT / ".tools" / "schemas"
# Upstream data beside the checkout (CI and shared machines): CRDs, values schemas, pinned charts.
SHARED_UPSTREAM = ROOT.parent / "shared" / "upstream"


def charts_dir(override: str | None = None) -> Path | None:
    """LIGHTRAIL_CHARTS (or --charts): a directory holding <chart-name>/ or <chart-name>.tgz for every upstream chart.

    No default: users get the charts from their pinned repositories unless they set it (the test
    suite defaults it to shared_charts()).
    """
    return _given_dir(override, "--charts", "LIGHTRAIL_CHARTS")


def shared_charts() -> Path | None:
    """The pinned upstream charts as `helm pull` archives beside the checkout, when present."""
    path = SHARED_UPSTREAM / "charts"
    return path if path.is_dir() else None


def schemas_dir(override: str | None = None) -> Path | None:
    """LIGHTRAIL_SCHEMAS (or --schemas): upstream CRDs and chart values schemas (default ../shared/upstream)."""
    given = _given_dir(override, "--schemas", "LIGHTRAIL_SCHEMAS")
    if given:
        return given
    return SHARED_UPSTREAM if SHARED_UPSTREAM.is_dir() else None


def kserve_tls() -> bool:
    """LIGHTRAIL_KSERVE_TLS: 1 when the cluster's KServe has enableLLMInferenceServiceTLS on (default off, as KServe)."""
    value = os.environ.get("LIGHTRAIL_KSERVE_TLS", "").strip().lower()
    if value not in ("", "0", "1", "true", "false"):
        raise LightrailError(f"LIGHTRAIL_KSERVE_TLS={value!r} is not a switch; valid: 1, 0, true, false")
    return value in ("1", "true")


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
