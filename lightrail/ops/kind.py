"""`invoke up`: a kind cluster for the quick start and CI e2e jobs (needs a Docker engine).

kind comes from PATH, or pytest-kind downloads the pinned version (patterns/versions.yaml
`cluster.kind`) into the Lightrail cache; the node image is pinned too.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from types import SimpleNamespace

from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.ops.steps import Step
from lightrail.settings import cache_dir


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def check_name(name: str) -> str:
    """A kind cluster name that also makes a valid context (kind-NAME) and node container names."""
    if not _NAME.match(name or ""):
        raise LightrailError(f"--name {name!r} is not a valid kind cluster name: 1 to 32 lowercase letters, digits "
                             "or '-', starting and ending with a letter or digit")
    return name


def docker_problem() -> str | None:
    """Why kind cannot run here (no docker CLI, or no engine behind it), or None."""
    docker = shutil.which("docker")
    if not docker:
        return "the docker CLI is not installed"
    try:
        proc = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no Docker engine: {lines[-1] if lines else 'docker info failed'}"
    return None


def binary() -> str:
    """The kind CLI: from PATH, else the pinned release fetched by pytest-kind."""
    found = shutil.which("kind")
    if found:
        return found
    from pytest_kind.cluster import KindCluster

    pin = load_catalog().versions["cluster"]["kind"]["version"]
    path = cache_dir("kind") / f"kind-{pin}"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KIND_DOWNLOAD_URL",
                          f"https://github.com/kubernetes-sigs/kind/releases/download/{pin}/kind-linux-amd64")
    try:   # only its downloader: a KindCluster would also create .pytest-kind/ in the working directory
        KindCluster.ensure_kind(SimpleNamespace(kind_path=path, platform="linux"))
    except Exception as err:  # network errors of several kinds
        raise LightrailError(f"cannot download kind {pin}: {err}", fix="install kind and put it on PATH") from None
    return str(path)


def create_step(name: str) -> Step:
    image = load_catalog().versions["cluster"]["kind"]["node-image"]
    return Step(f"create kind cluster {name} ({image}) unless it exists", tool="kind", timeout=330,
                args=("create", "cluster", "--name", name, "--image", image, "--wait", "300s"))


def context(name: str) -> str:
    return f"kind-{name}"


def run(args: tuple[str, ...], timeout: float) -> str:
    """Run kind; `create cluster` for a cluster that exists is a no-op, not an error."""
    kind = binary()
    if args[:2] == ("create", "cluster"):
        name = args[args.index("--name") + 1]
        existing = subprocess.run([kind, "get", "clusters"], capture_output=True, text=True, timeout=60).stdout.split()
        if name in existing:
            return f"kind cluster {name} exists"
    proc = subprocess.run([kind, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise LightrailError(f"kind {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout
