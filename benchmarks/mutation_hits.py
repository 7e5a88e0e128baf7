"""pytest plugin of the mutation benchmark.

While mutmut maps tests to the functions they reach ("stats"), count the functions a test reached
in its subprocesses too: without it, every mutant of code the tests run through `invoke` (smoke,
status...) is reported "no tests" and never run. And before every test, empty the caches a module
fills on first use: otherwise only the first test maps to the code that builds them, and mutmut's
workers (forked from a process that already ran the tests) never run that code at all. Measuring
render, the render cache is emptied too: a render another test cached would hide a mutant."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parent / "mutation_site"
CACHES = {"lightrail.validate": "_METADATA"}   # module -> a dict it fills on first use


def _mapping() -> bool:
    from mutmut.mutation.trampoline import get_mutant_under_test

    return get_mutant_under_test() == "stats"


def pytest_runtest_setup(item):
    for module, name in CACHES.items():
        if module in sys.modules:
            getattr(sys.modules[module], name).clear()
    if os.environ.get("LIGHTRAIL_MUTATION_FRESH_RENDERS"):
        from lightrail.settings import cache_dir

        shutil.rmtree(cache_dir("render"), ignore_errors=True)


def pytest_configure(config):
    if _mapping():
        os.environ["LIGHTRAIL_MUTATION_HITS"] = tempfile.mkdtemp(prefix="mutation-hits-")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before mutmut files this test's hits, add the ones its subprocesses wrote."""
    hits = os.environ.get("LIGHTRAIL_MUTATION_HITS")
    if not hits or not _mapping():
        return
    from mutmut.state import state

    for path in Path(hits).glob("*.hits"):
        state()._stats.update(path.read_text().split())
        path.unlink()
