"""The shape of a progress display, which the CLI hands to long operations (ops flows, bench runs).

`progress(label)` is a context manager around a wait that yields `update(detail)`; the CLI's
(`lightrail.cli.output.progress`) shows it live on a terminal or as plain lines when piped. Lower
layers take one as a parameter, so they never print progress themselves.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Callable

Progress = Callable[[str], AbstractContextManager[Callable[[str], None]]]


@contextmanager
def no_progress(label: str):
    """For callers with nowhere to show progress (tests, library use)."""
    yield lambda detail: None
