"""How tasks print: `-o table|json|yaml`, documents on stdout, messages on stderr, full width when piped."""
from __future__ import annotations

import contextlib
import json
import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner

from lightrail.errors import choose

FORMATS = ("table", "json", "yaml")
OUTPUT_HELP = "table | json | yaml (json and yaml: one document on stdout, messages on stderr)"
PIPE_WIDTH = 400   # piped output is read by programs and grep: never cut at a terminal's 80 columns
SHOW_AFTER = 2.0   # seconds: shorter waits show nothing
PLAIN_EVERY = 10.0   # seconds between plain progress lines when stderr is not a terminal
TICK = 0.25


def output_format(value: str, formats=FORMATS) -> str:
    return choose("--output", value or "table", formats)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich exits 1 on a closed pipe; let `lightrail.cli.user_errors` end every task the same way (141)."""
        self.quiet = True
        raise BrokenPipeError


def console(stderr: bool = False) -> Console:
    """A rich console at the terminal's width, or wide when not a terminal (no `...` in piped tables)."""
    stream = sys.stderr if stderr else sys.stdout
    return _Console(file=stream, width=None if stream.isatty() else PIPE_WIDTH, soft_wrap=not stream.isatty())


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
    """Progress of a wait, once it has lasted SHOW_AFTER seconds: `LABEL: N s (detail)`.

    On a terminal a live line (rich) that disappears when the wait ends; when stderr is piped, a
    plain line on stderr when the detail changes and at least every PLAIN_EVERY seconds (a log
    stays readable). Yields `update(detail)`; the elapsed time counts by itself.
    """
    start = time.monotonic()
    detail = [""]
    done = threading.Event()
    terminal = sys.stderr.isatty()

    def line() -> str:
        return f"{label}: {time.monotonic() - start:.0f} s" + (f" ({detail[0]})" if detail[0] else "")

    def show() -> None:
        live, printed = None, (0.0, None)
        while not done.wait(TICK):
            elapsed = time.monotonic() - start
            if elapsed < SHOW_AFTER:
                continue
            if terminal and live is None:   # stdout goes above the live line only when it is the terminal too
                spinner = Spinner("dots", line())
                live = Live(spinner, console=console(stderr=True), transient=True, redirect_stdout=sys.stdout.isatty())
                live.start()
            elif terminal:
                spinner.update(text=line())
            elif detail[0] != printed[1] or elapsed - printed[0] >= PLAIN_EVERY:
                message(line())
                printed = (elapsed, detail[0])
        if live is not None:
            live.stop()

    shower = threading.Thread(target=show, name=f"progress: {label}", daemon=True)
    shower.start()
    try:
        yield lambda text: detail.__setitem__(0, text)
    finally:
        done.set()
        shower.join()
