"""How tasks print: `-o table|json|yaml`, documents on stdout, messages on stderr, full width when piped."""
from __future__ import annotations

import contextlib
import json
import sys

from rich.console import Console

from lightrail.errors import choose

FORMATS = ("table", "json", "yaml")
OUTPUT_HELP = "table | json | yaml (json and yaml: one document on stdout, messages on stderr)"
PIPE_WIDTH = 400   # piped output is read by programs and grep: never cut at a terminal's 80 columns


def output_format(value: str, formats=FORMATS) -> str:
    return choose("--output", value or "table", formats)


def console(stderr: bool = False) -> Console:
    """A rich console at the terminal's width, or wide when not a terminal (no `...` in piped tables)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else PIPE_WIDTH, soft_wrap=not stream.isatty())


def emit(data, fmt: str) -> None:
    """One JSON or YAML document on stdout."""
    if fmt == "yaml":
        from lightrail.render import dump_yaml

        print(dump_yaml(data), end="")
    else:
        print(json.dumps(data, indent=2))


def message(line: str) -> None:
    """A progress or context line: stderr, so stdout stays a clean document."""
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(label: str):
    """A callback `(elapsed_s, detail)` for long waits: a live line on a terminal, plain lines on stderr when piped."""
    if not sys.stderr.isatty():
        yield lambda elapsed, detail: message(f"{label}: {elapsed:.0f} s ({detail})")
        return
    with console(stderr=True).status(label) as status:
        yield lambda elapsed, detail: status.update(f"{label}: {elapsed:.0f} s ({detail})")
