"""Harnesses: well-known load generators we drive (never our own), and how to run them safely.

Each adapter module (vllm_serve, inference_perf, guidellm) turns a scenario load point into the
harness's own flags or config file and reads its result back into a summary point. This module
holds what they share: the target, on-demand installation of the optional harnesses into their
own venvs, and running a harness as a subprocess so that its crash cannot take Lightrail down.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError, choose
from lightrail.settings import harnesses_dir

HARNESSES = ("vllm", "inference-perf", "guidellm")
_EXE = {"inference-perf": "inference-perf", "guidellm": "guidellm"}
_COMPLETE = ".lightrail-complete"


@dataclass(frozen=True)
class Target:
    """Where the load goes: an OpenAI-compatible base URL and the served model names it answers."""

    url: str
    models: tuple[str, ...]
    tokenizer: str                       # HF id or local path (a local path works offline)
    metrics_urls: tuple[str, ...] = ()   # model servers' /metrics, for counters and prefix-cache hits
    ca_file: str = ""                    # PEM CA bundle for an https endpoint (--ca-file); "" = the system's CAs

    def models_for(self, which: str) -> tuple[str, ...]:
        return self.models if which == "all" else self.models[:1]


def adapter(name: str) -> ModuleType:
    choose("harness", name, HARNESSES)
    if name == "vllm":
        from lightrail.bench import vllm_serve as mod
    elif name == "inference-perf":
        from lightrail.bench import inference_perf as mod
    else:
        from lightrail.bench import guidellm as mod
    return mod


def pinned(name: str) -> dict:
    """The harness's pinned version and Python from patterns/versions.yaml."""
    return dict(load_catalog().versions["harnesses"][name])


def venv_dir(name: str) -> Path:
    return harnesses_dir() / f"{name}-{pinned(name)['version']}"


def executable(name: str) -> Path:
    return venv_dir(name) / "bin" / _EXE[name]


def installed(name: str) -> bool:
    return (venv_dir(name) / _COMPLETE).exists()


def ensure_installed(name: str) -> Path:
    """Install an optional harness at its pinned version into its own venv, once."""
    if installed(name):
        return executable(name)
    pin = pinned(name)
    python = find_python(pin["python"])
    venv = venv_dir(name)
    shutil.rmtree(venv, ignore_errors=True)    # a half-finished install is never reused
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing {name}=={pin['version']} into {venv} (first use; this can take minutes)", file=sys.stderr)
    for argv in ([python, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", f"{name}=={pin['version']}"]):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
            shutil.rmtree(venv, ignore_errors=True)
            raise LightrailError(f"installing {name}=={pin['version']} failed: {' / '.join(lines[-3:]) or 'no output'}",
                                 fix="check PyPI access, or use --harness=vllm")
    (venv / _COMPLETE).write_text(pin["version"])
    return executable(name)


def find_python(version: str) -> str:
    """A python<version> interpreter: on PATH, or installed by pyenv."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}")] + sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise LightrailError(f"Python {version} is needed for this harness and was not found",
                         fix=f"install it (e.g. `pyenv install {version}`) or use --harness=vllm")


def execute(argv: list[str], log: Path, *, timeout: float, offline: bool, ca_file: str = "") -> None:
    """Run one harness invocation with its output in `log`; raise LightrailError if it fails.
    ca_file: the harness trusts only this CA bundle (OpenSSL's SSL_CERT_FILE, which aiohttp, httpx
    and requests all read) - the endpoint is the only server it talks to.

    The harness runs in its own process group, killed on timeout or Ctrl-C, so no load keeps
    going after Lightrail stops.
    """
    env = dict(os.environ, PYTHONWARNINGS="ignore", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    if offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if ca_file:
        env.update(SSL_CERT_FILE=ca_file, REQUESTS_CA_BUNDLE=ca_file)
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise LightrailError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s",
                                 fix="use a smaller scenario or raise --timeout") from None
        except BaseException:
            _kill(proc)
            raise
    if code != 0:
        raise LightrailError(f"harness failed (exit {code}): {log_tail(log)}")


def log_tail(log: Path, lines: int = 3) -> str:
    """The last meaningful lines of a harness log (native-library leak reports skipped)."""
    noise = ("leaked", "nanobind", "See https://nanobind", "skipped remainder")
    kept = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
            if ln.strip() and not ln.lstrip().startswith("- ") and not any(n in ln for n in noise)]
    return " / ".join(kept[-lines:]) or "no output"


def _kill(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
