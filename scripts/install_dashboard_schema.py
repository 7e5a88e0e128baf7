"""Install the Grafana dashboard JSON Schema that `validate` checks rendered dashboards against.

Grafana defines the dashboard in CUE and publishes it to npm only as TypeScript types: the
`Dashboard` interface of @grafana/schema, generated from the CUE kind (Grafana's own frontend
builds against it). This installs the pinned @grafana/schema and ts-json-schema-generator
(patterns/versions.yaml `grafana-dashboard:`) with npm into ~/.cache/lightrail/npm/, converts that
interface into a JSON Schema (interfaces are closed: an unknown field is an error) and writes it to
.tools/schemas/grafana-dashboard-v<schemaVersion>.json, where <schemaVersion> is the package's own
`defaultDashboard.schemaVersion` and must equal the pin. A panel's `options` and
`fieldConfig.defaults.custom` are its plugin's (`Options`, `FieldConfig` of the plugin's types in the
same package): for each pinned panel type, grafana-dashboard-v<schemaVersion>-<type>.json. Needs Node
and npm; idempotent.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / ".tools" / "schemas"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightrail" / "npm"
TYPES = "node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts"
PANEL_TYPES = "node_modules/@grafana/schema/dist/types/raw/composable/{}/panelcfg/x/types.gen.d.ts"
GENERATOR = "node_modules/ts-json-schema-generator/dist/ts-json-schema-generator.js"


def run(*args: str, cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: {' '.join(args[:3])} failed in {cwd}:\n{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def main() -> int:
    if shutil.which("npm") is None or shutil.which("node") is None:
        print("  note: no Node/npm: the Grafana dashboard schema is not installed "
              "(validating --monitoring=prometheus renders will name it as missing)")
        return 0
    pin = yaml.safe_load((ROOT / "patterns" / "versions.yaml").read_text())["grafana-dashboard"]
    packages = [f"{name}@{version}" for name, version in pin["npm"].items()]
    source = (f"@grafana/schema {pin['npm']['@grafana/schema']}, converted by "
              f"ts-json-schema-generator {pin['npm']['ts-json-schema-generator']}")
    base = f"grafana-dashboard-v{pin['schemaVersion']}"
    targets = {SCHEMAS / f"{base}.json": (TYPES, "Dashboard"),
               **{SCHEMAS / f"{base}-{panel}.json": (PANEL_TYPES.format(panel), "*") for panel in pin["panels"]}}
    if all(t.exists() and json.loads(t.read_text()).get("$comment") == source for t in targets):
        print(f"  grafana dashboard schema v{pin['schemaVersion']} (panels: {', '.join(pin['panels'])}): "
              f"{SCHEMAS.relative_to(ROOT)}/{base}*.json")
        return 0
    work = CACHE / hashlib.sha256(" ".join(packages).encode()).hexdigest()[:16]
    work.mkdir(parents=True, exist_ok=True)
    if not (work / GENERATOR).exists():
        run("npm", "install", "--prefix", ".", "--no-save", "--no-package-lock", "--no-audit", "--no-fund",
            "--ignore-scripts", *packages, cwd=work)
    declared = int(run("node", "-e", "import('@grafana/schema').then(m => "
                       "console.log(m.defaultDashboard.schemaVersion))", cwd=work))
    if declared != pin["schemaVersion"]:
        sys.exit(f"error: @grafana/schema {pin['npm']['@grafana/schema']} is for dashboard schemaVersion {declared}, "
                 f"not {pin['schemaVersion']}: fix `grafana-dashboard:` in patterns/versions.yaml")
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for target, (types, name) in targets.items():
        schema = json.loads(run("node", GENERATOR, "--path", types, "--type", name, cwd=work))
        target.write_text(json.dumps({"$comment": source, **schema}, indent=1) + "\n")
        print(f"  {target.relative_to(ROOT)} (from {types.split('/dist/types/')[1]}, {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
