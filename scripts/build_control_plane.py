"""Build the local control plane (kube-apiserver, controller-manager, scheduler, etcd, kwok, kwokctl)
from the Go modules pinned in patterns/versions.yaml `control-plane:`, and link them into .tools/bin.
The pinned `go-tools:` (actionlint) and `controllers:` (LWS, KServe, istiod: the e2e tests run them)
are built the same way; `build_control_plane.py SECTION [NAME ...]` builds only those.

Each component is built once per version into ~/.cache/lightrail/bin/<component>-<version>/ (a
second setup, or CI on the same machine, only links). The build happens in a generated wrapper
module under ~/.cache/lightrail/build/: Go ignores a dependency's `replace` directives, and
k8s.io/kubernetes replaces its k8s.io/* staging modules with paths in its own repository, so the
wrapper requires each of them at the pinned `local` version instead. Only the Go module proxy is
used; nothing is written into the repository but the links.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".tools" / "bin"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightrail"
LOCAL_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+\.{1,2}/", re.M)


class BuildError(Exception):
    """A go command failed (its stderr is the message)."""


def go(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    proc = subprocess.run(["go", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise BuildError(f"go {' '.join(args[:2])} failed in {cwd}:\n{proc.stderr.strip()[-3000:]}")
    return proc.stdout



def wrapper_module(name: str, pin: dict, work: Path) -> None:
    """go.mod requiring the pinned module, with its repository-local replaces pinned to `local`."""
    lines = [f"module lightrail.local/build/{name}", "", "go 1.24.0", "",
             f"require {pin['module']} {pin['version']}", ""]
    if pin.get("local"):
        info = json.loads(go("mod", "download", "-json", f"{pin['module']}@{pin['version']}", cwd=work))
        local = sorted(set(LOCAL_REPLACE.findall(Path(info["GoMod"]).read_text())))
        lines += [f"replace {mod} => {mod} {pin['local']}" for mod in local]
    lines += [f"replace {line}" for line in pin.get("replace", [])]
    lines += [f"exclude {line}" for line in pin.get("exclude", [])]
    (work / "go.mod").write_text("\n".join(lines) + "\n")


def ldflags(pin: dict) -> str:
    """Version stamps (what `kube-apiserver --version` and /version report), as upstream's release build sets them."""
    flags = ["-s", "-w"]
    version = pin["version"]
    major, minor = version.lstrip("v").split(".")[:2]
    for pkg in pin.get("stamp", []):
        flags += [f"-X {pkg}.{var}={value}" for var, value in (
            ("gitVersion", version), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))]
    return " ".join(flags)


def build(name: str, pin: dict) -> Path:
    out = CACHE / "bin" / f"{name}-{pin['version']}"
    if all((out / path).exists() for path in [*pin["binaries"], *pin.get("files", [])]):
        return out
    work = CACHE / "build" / f"{name}-{pin['version']}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    print(f"  building {name} {pin['version']} from {pin['module']} (first time only; minutes on 2 cores)", flush=True)
    wrapper_module(name, pin, work)
    packages = {binary: pin["module"] if path == "." else f"{pin['module']}/{path}"
                for binary, path in pin["binaries"].items()}
    go("get", *(f"{pkg}@{pin['version']}" for pkg in dict.fromkeys(packages.values())), cwd=work)
    staging = work / "bin"
    for binary, pkg in packages.items():
        go("build", "-trimpath", "-ldflags", ldflags(pin), "-o", str(staging / binary), pkg, cwd=work)
    if pin.get("files"):  # data the binary needs at this exact version (CRDs, presets), from the same module
        source = Path(go("list", "-f", "{{.Module.Dir}}", next(iter(packages.values())), cwd=work).strip())
        for path in pin["files"]:
            shutil.copytree(source / path, staging / path)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(out)
    print(f"  built {name} {pin['version']} in {time.monotonic() - started:.0f} s", flush=True)
    return out


SECTIONS = ("control-plane", "go-tools", "controllers")


def main(args: list[str]) -> int:
    """No arguments: every section (what scripts/setup runs); `SECTION [NAME ...]`: only those."""
    if shutil.which("go") is None:
        print("  note: no Go toolchain: the local control plane (invoke up --engine=kwok, tests/e2e) is not built")
        return 0
    versions = yaml.safe_load((ROOT / "patterns" / "versions.yaml").read_text())
    section, *names = args or [None]
    if section is not None and section not in SECTIONS:
        sys.exit(f"error: unknown section {section!r}; choose from {', '.join(SECTIONS)}")
    if names and (unknown := set(names) - set(versions[section])):
        sys.exit(f"error: no {section} pin named {', '.join(sorted(unknown))}; choose from {', '.join(versions[section])}")
    BIN.mkdir(parents=True, exist_ok=True)
    for part in [section] if section else SECTIONS:
        for name, pin in versions[part].items():
            if names and name not in names:
                continue
            try:
                out = build(name, pin)
            except BuildError as err:
                if part != "controllers":
                    sys.exit(f"error: {err}")
                # Optional: the tests that run this controller skip, naming it; the rest of setup goes on.
                print(f"  note: controller {name} {pin['version']} did not build: {err}")
                continue
            for binary in pin["binaries"]:
                link = BIN / binary
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(out / binary)
            print(f"  {name} {pin['version']}: {', '.join(pin['binaries'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
