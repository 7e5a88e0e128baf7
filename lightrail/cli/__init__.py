"""Invoke task collections. Each module parses flags, calls the core and prints; nothing else."""
from __future__ import annotations

import functools
import sys

from invoke import Exit

from lightrail.errors import LightrailError


def user_errors(fn):
    """Turn a LightrailError into `error: ...` on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LightrailError as err:
            print(f"error: {err}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper
