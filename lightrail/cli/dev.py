"""Developer tasks: the test suite."""
from __future__ import annotations

from invoke import task


@task(help={"k": "only tests matching this expression", "args": "extra pytest arguments"})
def test(c, k="", args=""):
    """Run the whole test suite (what CI runs)."""
    select = f"-k {k!r}" if k else ""
    c.run(f".venv/bin/python -m pytest {select} {args}", pty=False)
