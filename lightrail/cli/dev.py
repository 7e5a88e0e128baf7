"""Developer tasks: the test suite."""
from __future__ import annotations

from lightrail.cli import command


@command(help={"match": "only tests matching this pytest -k expression", "args": "extra pytest arguments"})
def test(c, match="", args=""):
    """Run the whole test suite (what CI runs)."""
    select = f"-k {match!r}" if match else ""
    c.run(f".venv/bin/python -m pytest {select} {args}", pty=False)
