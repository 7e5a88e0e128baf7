"""Invoke task collections. Each module parses flags, calls the core and prints; nothing else.

Every task is declared with `command` so the whole CLI keeps one flag convention (docs/conventions.md):
`-h` is help, and the few short flags mean the same thing in every task.
"""
from __future__ import annotations

import functools
import os
import sys

from invoke import Exit, Task, task

from lightrail.errors import LightrailError

# The only short flags, the same in every task that has the long one (kubectl's habits).
SHORT_FLAGS = {"kube_context": "k", "namespace": "n", "output": "o"}
BROKEN_PIPE = 141   # 128 + SIGPIPE


class LightrailTask(Task):
    """A task whose short flags come from SHORT_FLAGS, never from invoke's first-free-letter guess."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in SHORT_FLAGS:
            opts["names"] = [*opts["names"], SHORT_FLAGS[name]]
        return opts


def command(*args, **kwargs):
    """`@task` with the Lightrail flag convention (no automatic short flags)."""
    return task(*args, klass=LightrailTask, auto_shortflags=False, **kwargs)


def user_errors(fn):
    """Turn a LightrailError into `error: ...` on stderr and exit code 1 (no traceback).

    With `--output=json|yaml` the error is also the document on stdout, so scripts parse every outcome.
    A reader that stops early (`| head`) ends the task quietly with 141, the status of a tool killed
    by SIGPIPE (Python ignores that signal and would print a traceback instead).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()   # a closed pipe shows here, not as "Exception ignored" at exit
            return result
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing left to flush at exit
            raise Exit(code=BROKEN_PIPE) from None
        except LightrailError as err:
            if kwargs.get("output") in ("json", "yaml"):
                from lightrail.cli.output import emit

                emit({"ok": False, "error": str(err)}, kwargs["output"])
            print(f"error: {err}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper
