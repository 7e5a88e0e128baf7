"""What validating rendered objects costs, and what the caches in lightrail.schemas save.

    .venv/bin/python benchmarks/validate_speed.py [--repeat N]

Objects: every supported (pattern, accel, stack) rendered without validation — llmd with the real
charts when LIGHTRAIL_CHARTS is set, else offline (HTTPRoutes only) — plus KServe's
LLMInferenceServiceConfig presets. Measures, each in a fresh process so nothing is warm by accident:
1. a first validation with an empty ~/.cache (the CRD YAML is parsed) and with the JSON cache;
2. per CRD file: YAML parse (CSafeLoader) against loading the cached JSON;
3. per object, warm: our cached validators against kubernetes_validate.validate() (built-ins).
Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST_RUN = """
import json, sys, time
t0 = time.perf_counter()
from lightrail.validate import validate_objects
t1 = time.perf_counter()
objects = json.load(open(sys.argv[1]))
problems = validate_objects(objects)
t2 = time.perf_counter()
validate_objects(objects)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "again_s": t3 - t2, "problems": len(problems)}))
"""


def objects() -> list[dict]:
    import yaml

    from lightrail.catalog import STACKS, load_catalog
    from lightrail.plan import Request, build_plan
    from lightrail.render import render
    from lightrail.settings import charts_dir, schemas_dir

    cat, charts = load_catalog(), charts_dir()
    out = []
    for p in cat.patterns:
        for a in cat.accelerators:
            for s in STACKS:
                if not cat.patterns[p].unsupported_reason(a, s):
                    out += render(build_plan(Request(p, a, s)), charts=charts, offline=True).objects
    presets = schemas_dir() / "kserve-presets" / "llmisvcconfig-v0.20.0.yaml"
    return out + list(yaml.safe_load_all(presets.read_text()))


def first_run(objects_file: Path, cache: Path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run([sys.executable, "-c", FIRST_RUN, str(objects_file)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def per_file(cache: Path) -> dict:
    """YAML parse vs JSON cache load for each CRD file (the cache is warm after first_run)."""
    import yaml

    from lightrail.schemas import _crd_files, _parsed
    from lightrail.settings import schemas_dir

    os.environ["XDG_CACHE_HOME"] = str(cache)
    rows = {}
    for rel, path in _crd_files(str(schemas_dir())):
        start = time.perf_counter()
        with path.open() as fh:
            list(yaml.load_all(fh, Loader=yaml.CSafeLoader))
        parse = time.perf_counter() - start
        start = time.perf_counter()
        _parsed(path)
        rows[rel] = {"mb": round(path.stat().st_size / 1e6, 2), "yaml_s": round(parse, 3),
                     "json_cache_s": round(time.perf_counter() - start, 4)}
    return rows


def per_object(objs: list[dict], repeat: int) -> dict:
    import kubernetes_validate

    from lightrail.schemas import _builtin_validator, k8s_version
    from lightrail.validate import validate_objects

    validate_objects(objs)   # warm
    builtins = [o for o in objs if _builtin_validator(o["apiVersion"], o["kind"])]
    start = time.perf_counter()
    for _ in range(repeat):
        validate_objects(objs)
    ours = (time.perf_counter() - start) / (repeat * len(objs))
    start = time.perf_counter()
    for _ in range(repeat):
        validate_objects(builtins)
    ours_builtin = (time.perf_counter() - start) / (repeat * len(builtins))
    start = time.perf_counter()
    for o in builtins:
        kubernetes_validate.validate(o, k8s_version(), strict=True)
    theirs = (time.perf_counter() - start) / len(builtins)
    return {"objects": len(objs), "builtin_objects": len(builtins), "ours_ms": round(ours * 1e3, 3),
            "ours_builtin_ms": round(ours_builtin * 1e3, 3),
            "kubernetes_validate_builtin_ms": round(theirs * 1e3, 3),
            "speedup_builtin": round(theirs / ours_builtin, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="warm passes over the objects")
    args = ap.parse_args()
    objs = objects()
    with tempfile.TemporaryDirectory() as tmp:
        objects_file, cache = Path(tmp) / "objects.json", Path(tmp) / "cache"
        objects_file.write_text(json.dumps(objs))
        result = {"empty_cache": first_run(objects_file, cache), "json_cache": first_run(objects_file, cache),
                  "crd_files": per_file(cache), "per_object_warm": per_object(objs, args.repeat)}
    print(json.dumps(result, indent=2))
    return 0 if result["empty_cache"]["problems"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
