"""Mutation score of the core decision modules: how many small code changes the tests notice.

    .venv/bin/python benchmarks/mutation.py [--module NAME ...] [--max-children N] [--only GLOB ...] [--list]

mutmut (pinned in patterns/versions.yaml under `mutation:`) is installed on first use into its
own venv under ~/.cache/lightrail/mutation — never into .venv, and never run by CI (it runs the
tests once per mutant: minutes to an hour per module on two cores). The venv sees the project's
dependencies through a .pth file pointing at .venv's site-packages.

Each module runs on its own: a copy of the checkout's files in ~/.cache/lightrail/mutation/work/
<module>, mutmut mutating that one file, with only the tests that decide it (tests that start a
real vLLM are left out: one per mutant would take hours; for smoke/checks two vLLM servers are started
once and its vLLM tests attach to them). Hits in the tests' subprocesses (`invoke smoke`) are
counted too (benchmarks/mutation_hits.py): mutmut alone sees only its own process. For the
modules renders depend on, renders are not cached (LIGHTRAIL_NO_CACHE=1): a mutant must not hide
behind a render of the original code; render itself (whose cache is part of the module) caches
into its own directory, emptied before every test; the others keep the render cache (their
mutants cannot change a render). Prints one line per module: killed / mutants and the score;
`--list` names every surviving mutant (`mutmut show NAME` in the module's work directory shows its
diff). docs/testing.md records the scores and the survivors we accept.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightrail.catalog import load_catalog  # noqa: E402
from lightrail.settings import cache_dir, charts_dir, schemas_dir, shared_charts  # noqa: E402

# module -> the test files (and pytest selection) that decide it
MODULES = {
    "plan": ("lightrail/plan.py", ["tests/test_plan.py"]),
    # the renders themselves, and what `invoke render` does with one: write it, cache it, refuse bad input
    "render": ("lightrail/render.py", ["tests/test_kserve.py", "tests/test_llmd.py", "tests/test_render_cli.py",
                                       "tests/test_cli_contract.py"]),
    "validate": ("lightrail/validate.py", ["tests/test_validate.py"]),
    "ops/readiness": ("lightrail/ops/readiness.py", ["tests/test_ops_readiness.py"]),
    "ops/deploy": ("lightrail/ops/deploy.py", ["tests/test_ops_deploy.py"]),
    "ops/teardown": ("lightrail/ops/teardown.py", ["tests/test_ops_teardown.py"]),
    "ops/checks": ("lightrail/ops/checks.py", ["tests/test_ops_checks.py"]),
    # with real vLLM (started once, see VLLM_MODULES); minus the two tests that start a server of their own
    # the migration's pure core (tests/e2e/test_migrate.py needs a real control plane: minutes, left out)
    "migrate/guards": ("lightrail/migrate/guards.py", ["tests/test_migrate_guards.py", "tests/test_migrate_plan.py"]),
    "migrate/routes": ("lightrail/migrate/routes.py", ["tests/test_migrate_routes.py", "tests/test_migrate_plan.py"]),
    "migrate/preflight": ("lightrail/migrate/preflight.py", ["tests/test_migrate_preflight.py"]),
    "migrate/plan": ("lightrail/migrate/plan.py", ["tests/test_migrate_plan.py"]),
    "smoke/checks": ("lightrail/smoke/checks.py", ["tests/test_smoke.py", "tests/test_aliases.py",
                                                   "-k", "not cannot_start and not against_the_real_vllm"]),
}
# modules whose deciding tests talk to a real vLLM: two servers (Qwen, Phi) are started once for the
# whole run and the tests attach to them (tests/conftest.py RUNNING)
VLLM_MODULES = {"smoke/checks"}
FEED_RENDERS = {"plan", "render", "validate"}
ALSO_COPY = ["patterns", "helmfiles", "kustomize", "tasks.py", "benchmarks", "docs", "README.md", "DEVELOPERS.md"]
SURVIVED = ("survived", "no tests", "timeout", "suspicious")


def mutmut_venv() -> Path:
    """~/.cache/lightrail/mutation/mutmut-<version>, made once; it imports the project's .venv packages.

    The .pth naming .venv's site-packages is rewritten on every run: the checkout that made the
    venv may be gone (a removed worktree), and then nothing of the project's would import."""
    version = load_catalog().versions["mutation"]["mutmut"]
    home = cache_dir("mutation") / f"mutmut-{version}"
    python = home / "bin" / "python"
    if not python.exists():
        venv.create(home, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"mutmut=={version}"], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "lightrail-project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return home


def workdir(name: str, source: str, tests: list[str], markers: str) -> Path:
    """A fresh copy of the checkout's files, configured for mutmut to mutate `source` only."""
    work = cache_dir("mutation") / "work" / name.replace("/", "-")
    shutil.rmtree(work, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
    def listed(values):
        return "".join(f"\n    {v}" for v in values)

    selection = [*tests, "-m", markers, "-p", "no:cacheprovider"]
    (work / "setup.cfg").write_text(f"[mutmut]\nsource_paths = lightrail\nonly_mutate = {source}\n"
                                    f"also_copy ={listed(ALSO_COPY)}\n"
                                    f"pytest_add_cli_args ={listed(['-p', 'benchmarks.mutation_hits'])}\n"
                                    f"pytest_add_cli_args_test_selection ={listed(selection)}\n")
    # the pinned tools stay where they are: settings.TOOLS_BIN is <root>/.tools/bin, and mutmut's root is mutants/
    (work / "mutants").mkdir()
    (work / "mutants" / ".tools").symlink_to((ROOT / ".tools").resolve())
    return work


@contextlib.contextmanager
def vllm_servers():
    """The two servers the vLLM tests attach to, for the whole run (env for tests/conftest.py)."""
    from lightrail.testing.tinymodel import generate
    from lightrail.testing.vllm import VLLMServer
    from tests.conftest import PHI, QWEN

    model = generate(cache_dir("mutation") / "tiny-model")
    with VLLMServer(model, QWEN, startup_timeout=900) as qwen, VLLMServer(model, PHI, startup_timeout=900) as phi:
        yield {"LIGHTRAIL_TEST_MODEL": str(model), "LIGHTRAIL_TEST_VLLM_URLS": f"{qwen.url},{phi.url}"}


def run(name: str, home: Path, max_children: int, only: list[str]) -> dict:
    source, tests = MODULES[name]
    if name in VLLM_MODULES:
        with vllm_servers() as attach:
            return measure(name, source, tests, home, max_children, attach, "not kind", only)
    return measure(name, source, tests, home, max_children, {}, "not vllm and not kind", only)


def measure(name: str, source: str, tests: list[str], home: Path, max_children: int, attach: dict,
            markers: str, only: list[str]) -> dict:
    work = workdir(name, source, tests, markers)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **attach)
    if name == "render":   # its cache code is measured too: a cache of the run's own, empty at every test
        env["XDG_CACHE_HOME"] = str(work / "cache")
        env["LIGHTRAIL_MUTATION_FRESH_RENDERS"] = "1"
    elif name in FEED_RENDERS:
        env["LIGHTRAIL_NO_CACHE"] = "1"
    # the copy is not beside ../shared: pass on the defaults the checkout's tests would get
    for var, value in (("LIGHTRAIL_SCHEMAS", schemas_dir()), ("LIGHTRAIL_CHARTS", charts_dir() or shared_charts())):
        if value:
            env[var] = str(value)
    mutmut = str(home / "bin" / "mutmut")
    log = work / "mutmut-run.log"
    with log.open("w") as out:
        subprocess.run([mutmut, "run", "--max-children", str(max_children), *only], cwd=work,
                       env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    listing = subprocess.run([mutmut, "results", "--all=true"], cwd=work, env=env, capture_output=True, text=True)
    statuses = {}
    for line in listing.stdout.splitlines():
        mutant, _, status = line.strip().rpartition(": ")
        if mutant and (not only or any(fnmatch.fnmatch(mutant, glob) for glob in only)):
            statuses[mutant] = status
    killed = sum(1 for s in statuses.values() if s in ("killed", "caught by type check"))
    survivors = sorted(m for m, s in statuses.items() if s in SURVIVED)
    total = killed + len(survivors)
    return {"module": name, "file": source, "tests": tests, "mutants": total, "killed": killed,
            "score_pct": round(100.0 * killed / total, 1) if total else None, "survivors": survivors,
            "statuses": {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))},
            "workdir": str(work), "log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=list(MODULES), help="default: every module")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    parser.add_argument("--list", action="store_true", help="name every surviving mutant")
    parser.add_argument("--only", metavar="GLOB", action="append", default=[],
                        help="only the mutants whose names match (repeatable), e.g. a sample: '*[05]' (one in "
                        "five), one function: '*.x_run__mutmut_*', or the survivors of a previous run")
    args = parser.parse_args()
    home = mutmut_venv()
    results = []
    for name in args.module or list(MODULES):
        result = run(name, home, args.max_children, args.only)
        results.append(result)
        score = "n/a" if result["score_pct"] is None else f"{result['score_pct']:.1f} %"
        print(f"{name:<14} {result['killed']:>4} / {result['mutants']:<4} killed  {score:>7}   {result['statuses']}",
              flush=True)
        if args.list:
            for mutant in result["survivors"]:
                print(f"    survived: {mutant}")
    (cache_dir("mutation") / "last-run.json").write_text(json.dumps(results, indent=2))
    killed, total = sum(r["killed"] for r in results), sum(r["mutants"] for r in results)
    if total:
        print(f"{'all':<14} {killed:>4} / {total:<4} killed  {100.0 * killed / total:>5.1f} %")


if __name__ == "__main__":
    main()
