"""Developer tasks: the test suite."""
from __future__ import annotations

from lightrail.cli import command


@command(help={"match": "only tests matching this pytest -k expression",
               "args": "extra pytest arguments (`-n 0`: one process, e.g. to see a test's own output with -s)"})
def test(c, match="", args=""):
    """Run the whole test suite (what CI runs): two pytest-xdist workers, one taking tests/e2e in order
    (mostly waiting on the local cluster and vLLM), the other the unit tests beside it."""
    select = f"-k {match!r}" if match else ""
    c.run(f".venv/bin/python -m pytest -n 2 --dist loadgroup {select} {args}", pty=False)
