"""Developer tasks: the test suite."""
from __future__ import annotations

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


@command(help={"match": "only tests matching this pytest -k expression",
               "args": "extra pytest arguments; the tests then run in one pytest process"})
def test(c, match="", args=""):
    """Run the whole test suite (what CI runs): tests/e2e and the unit tests at once, as two pytest
    processes. The e2e tests mostly wait (on the local cluster, the holds, vLLM's answers), so the unit
    tests take the CPU they leave, at a lower priority; their report follows the e2e tests'."""
    select_args = ["-k", match] if match else []
    if args:
        c.run(f"{shlex.join([*PYTEST, *select_args])} {args}", pty=False)
        return
    with tempfile.TemporaryFile("w+") as log:
        unit = subprocess.Popen([*PYTEST, *select_args, "--ignore=tests/e2e", "-o", "cache_dir=.pytest_cache/unit"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: os.nice(UNIT_NICENESS))
        try:
            e2e = subprocess.run([*PYTEST, *select_args, "tests/e2e"], cwd=ROOT).returncode
        except BaseException:      # Ctrl-C: the unit tests stop too
            unit.terminate()
            unit.wait()
            raise
        codes = (e2e, unit.wait())
        log.seek(0)
        print("\n==== the unit tests (run beside tests/e2e) ====", flush=True)
        sys.stdout.write(log.read())
    failed = [code for code in codes if code not in (0, NO_TESTS)]
    if failed or codes == (NO_TESTS, NO_TESTS):
        raise Exit(code=failed[0] if failed else NO_TESTS)
