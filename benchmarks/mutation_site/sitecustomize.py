"""Mutation benchmark only (benchmarks/mutation.py puts this directory on PYTHONPATH while mutmut
maps tests to functions): a subprocess a test starts (`invoke smoke ...`) runs mutated functions
too, but mutmut records those hits only in its own process. At exit, write them where the test
process reads them back (benchmarks/mutation_hits.py)."""
import atexit
import os
import sys

_HITS = os.environ.get("LIGHTRAIL_MUTATION_HITS")


def _dump() -> None:
    state = sys.modules.get("mutmut.state")
    hits = state.state()._stats if state else set()
    if hits:
        with open(os.path.join(_HITS, f"{os.getpid()}.hits"), "w") as out:
            out.write("\n".join(sorted(hits)))


if _HITS:
    atexit.register(_dump)
