"""Where runs live: <results>/<timestamp>-<pattern>-<stack>-<accel>-<scenario>/.

A run is written into a hidden staging directory and renamed into place only when complete,
so a directory that looks like a run always is one. A failed run's logs are moved under
.failed/ for debugging, where `bench.list` and `bench.compare` never look.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from lightrail.errors import LightrailError
from lightrail.settings import results_dir

COMPLETE = ("summary.json", "metadata.json")


def run_name(pattern: str, stack: str, accel: str, scenario: str, when: datetime) -> str:
    return f"{when.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{pattern}-{stack}-{accel}-{scenario}"


def stage(root: Path, name: str) -> Path:
    path = root / f".staging-{name}"
    shutil.rmtree(path, ignore_errors=True)
    (path / "raw").mkdir(parents=True)
    return path


def commit(staged: Path, summary: dict, metadata: dict) -> Path:
    """Write the summary and metadata last, then rename the run into place in one step."""
    (staged / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (staged / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    final = staged.parent / staged.name.removeprefix(".staging-")
    if final.exists():
        raise LightrailError(f"{final} already exists; not overwriting a stored run")
    staged.rename(final)
    return final


def abandon(staged: Path) -> Path | None:
    if not staged.exists():
        return None
    failed = staged.parent / ".failed" / staged.name.removeprefix(".staging-")
    failed.parent.mkdir(exist_ok=True)
    shutil.rmtree(failed, ignore_errors=True)
    staged.rename(failed)
    return failed


def is_complete(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and all((path / f).is_file() for f in COMPLETE)


def runs(root: Path | None = None) -> list[Path]:
    """Complete runs, newest first (names start with their UTC timestamp)."""
    root = root or results_dir()
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if is_complete(p)), key=lambda p: p.name, reverse=True)


def resolve(ref: str, root: Path | None = None) -> Path:
    """A run from a path, or from its directory name under the results root."""
    root = root or results_dir()
    for path in (Path(ref), root / ref):
        if is_complete(path):
            return path.resolve()
    raise LightrailError(f"{ref} is not a complete benchmark run (a directory with {' and '.join(COMPLETE)})",
                         fix="see `invoke bench.list` for stored runs")


def load(path: Path) -> tuple[dict, dict]:
    return json.loads((path / "summary.json").read_text()), json.loads((path / "metadata.json").read_text())
