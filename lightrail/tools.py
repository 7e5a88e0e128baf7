"""Run the pinned CLI tools (helm, helmfile, kubectl) from .tools/bin.

Every call goes through `run`, which puts .tools/bin first on PATH (helmfile calls helm),
turns a missing binary or a failure into a LightrailError with the tool's own message, and
records how long each call took (benchmarks compare our renders with the raw calls).
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lightrail.errors import LightrailError
from lightrail.settings import TOOLS_BIN

TOOLS = ("helm", "helmfile", "kubectl", "kwokctl", "promtool")


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    seconds: float
    returncode: int


_calls: list[Call] = []
_lock = threading.Lock()


def calls() -> list[Call]:
    """The tool calls made so far in this process (for benchmarks)."""
    with _lock:
        return list(_calls)


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HELM_CACHE_HOME", str(Path.home() / ".cache" / "lightrail" / "helm"))
    env.update(extra or {})
    return env


def binary(tool: str) -> str:
    path = TOOLS_BIN / tool
    if not path.exists():
        raise LightrailError(f"{tool} is not installed in {TOOLS_BIN}", fix="run scripts/setup")
    return str(path)


def run(tool: str, *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 300,
        input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a pinned tool; on failure raise LightrailError carrying the tool's stderr."""
    if tool not in TOOLS:
        raise LightrailError(f"unknown tool {tool!r}; valid: {', '.join(TOOLS)}")
    argv = (binary(tool), *args)
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              input=input, env=tool_env(env))
    except subprocess.TimeoutExpired:
        raise LightrailError(f"{tool} {' '.join(args[:3])} did not finish within {timeout:.0f} s") from None
    with _lock:
        _calls.append(Call(argv, time.perf_counter() - start, proc.returncode))
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LightrailError(f"{tool} {' '.join(args[:2])} failed: {' / '.join(detail[-3:]) or 'no output'}")
    return proc
