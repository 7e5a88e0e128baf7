"""The CI workflows users copy: valid for GitHub Actions (actionlint, built from its pinned Go module),
and every `invoke` they run is a real task with real flags."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from lightrail.settings import ROOT, TOOLS_BIN

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
INVOKE = re.compile(r"\.venv/bin/invoke\s+([\w.]+)((?:\s+--[\w-]+(?:=\S+)?)*)")


def test_workflows_pass_actionlint():
    actionlint = TOOLS_BIN / "actionlint"
    if not actionlint.exists():
        pytest.skip("actionlint is not built: run scripts/setup with a Go toolchain")
    proc = subprocess.run([str(actionlint), *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_invoke_in_the_workflows_is_a_task_with_those_flags():
    calls = set()
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job["steps"]:
                for task, flags in INVOKE.findall(step.get("run", "")):
                    calls.add((task, tuple(f.split("=")[0] for f in flags.split())))
    assert {task for task, _ in calls} >= {"test", "up", "deploy", "teardown", "down", "status"}
    for task, flags in sorted(calls):
        help_text = subprocess.run([sys.executable, "-m", "invoke", task, "--help"], cwd=ROOT, capture_output=True,
                                   text=True).stdout
        assert help_text, f"invoke {task} is not a task"
        for flag in flags:
            assert re.search(rf"{flag}\b", help_text), f"invoke {task} has no {flag}"


def test_invoke_test_runs_the_e2e_modules_that_share_the_vllm_pair_in_one_process():
    """`invoke test` runs E2E_VLLM_MODULES in one pytest process and the other e2e modules in another:
    a module using the pair (directly or through `upstreams`) left out would start two more vLLMs."""
    from lightrail.cli.dev import E2E_VLLM_MODULES

    modules = {path.name: path.read_text() for path in (ROOT / "tests" / "e2e").glob("test_*.py")}
    assert set(E2E_VLLM_MODULES) <= modules.keys()
    assert {name for name, text in modules.items() if re.search(r"\b(vllm_pair|upstreams)\b", text)} == \
        set(E2E_VLLM_MODULES)
