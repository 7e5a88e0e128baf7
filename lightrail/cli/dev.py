"""Developer tasks: the test suite."""
from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile

from invoke import Exit

from lightrail.cli import command
from lightrail.settings import ROOT

PYTEST = (str(ROOT / ".venv/bin/python"), "-m", "pytest")
NO_TESTS = 5     # pytest's exit status when nothing was selected
# the unit tests (and the vLLMs they start) yield the CPU to the e2e tests, whose streams, drains and
# propagation delays are timed: a stream cut by a pod's deletion must break within seconds
UNIT_NICENESS = 10
# the e2e modules whose tests share the session's two vLLMs (tests/e2e/conftest.py: vllm_pair): one
# pytest process runs them, another the rest of tests/e2e (about as long: 2026-11-30)
E2E_VLLM_MODULES = ("test_migrate.py", "test_gateway_model.py")


@command(help={"match": "only tests matching this pytest -k expression",
               "args": "extra pytest arguments; the tests then run in one pytest process"})
def test(c, match="", args=""):
    """Run the whole test suite (what CI runs) as three pytest processes at once: the e2e tests that
    share the two vLLMs (E2E_VLLM_MODULES) in the foreground, the other e2e tests, and the unit tests.
    Each e2e process starts its own control plane; the e2e tests mostly wait (the holds, drains and
    controllers), so the unit tests take the CPU they leave, at a lower priority. The other two
    processes' reports follow the foreground one's."""
    select_args = ["-k", match] if match else []
    if args:
        c.run(f"{shlex.join([*PYTEST, *select_args])} {args}", pty=False)
        return
    vllm = [f"tests/e2e/{name}" for name in E2E_VLLM_MODULES]
    background = {
        "the other e2e tests": ([*PYTEST, *select_args, "tests/e2e", *(f"--ignore={m}" for m in vllm),
                                 "-o", "cache_dir=.pytest_cache/e2e-other"], 0),
        "the unit tests": ([*PYTEST, *select_args, "--ignore=tests/e2e", "-o", "cache_dir=.pytest_cache/unit"],
                           UNIT_NICENESS),
    }
    with contextlib.ExitStack() as stack:
        started = {}
        for title, (argv, niceness) in background.items():
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
            started[title] = (subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                               preexec_fn=lambda n=niceness: os.nice(n)), log)
        try:
            codes = [subprocess.run([*PYTEST, *select_args, *vllm], cwd=ROOT).returncode]
        except BaseException:      # Ctrl-C: the others stop too
            for proc, _ in started.values():
                proc.terminate()
                proc.wait()
            raise
        for title, (proc, log) in started.items():
            codes.append(proc.wait())
            log.seek(0)
            print(f"\n==== {title} (run beside those above) ====", flush=True)
            sys.stdout.write(log.read())
    failed = [code for code in codes if code not in (0, NO_TESTS)]
    if failed or all(code == NO_TESTS for code in codes):
        raise Exit(code=failed[0] if failed else NO_TESTS)
