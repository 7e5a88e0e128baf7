"""Executors run steps: `DryRun` prints them, `Live` sends them to the cluster.

Both take the same steps in the same order, so a dry run shows exactly what a real run would
send. `run_steps` keeps a journal of the steps that started, which is what a rollback undoes
and what an interrupted run reports. `Live` shows the progress of every step while it runs
through a `Progress` the CLI gives (a live line on a terminal, plain lines when piped).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from lightrail.errors import LightrailError
from lightrail.ops import kind, kwok, wait
from lightrail.ops.secrets import Token
from lightrail.ops.steps import Step, reads_stdin, show
from lightrail.progress import Progress, no_progress
from lightrail.render import to_yaml

Out = Callable[[str], None]
OUTPUT_LINES = 15


@dataclass
class Journal:
    started: list[Step] = field(default_factory=list)
    finished: int = 0

    @property
    def in_progress(self) -> Step | None:
        return self.started[-1] if len(self.started) > self.finished else None


class DryRun:
    """Prints steps numbered across a whole command (`up` runs three flows), and sums them up at the end."""

    def __init__(self, out: Out):
        self.out = out
        self.count = 0
        self.kinds: dict[str, int] = {}

    def run(self, step: Step) -> None:
        self.count += 1
        if step.action in ("run", "secret"):
            for obj in step.objects:
                self.kinds[obj.get("kind", "?")] = self.kinds.get(obj.get("kind", "?"), 0) + 1
        self.out(show(step, self.count))

    def summary(self, context: str | None, namespace: str) -> str:
        """The last line of a long dry run: how much it would do, and where."""
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.kinds.items()))
        return (f"dry run: {self.count} step(s), {sum(self.kinds.values())} object(s)" + (f" ({kinds})" if kinds else "")
                + f"; context {context or '(none)'}, namespace {namespace}; nothing was changed")


class Live:
    """Runs steps against a cluster (`ops.cluster.KubeCluster`, or a fake of it in tests)."""

    def __init__(self, cluster, out: Out, token: Token | None = None, smoke: Callable[[], None] | None = None,
                 progress: Progress = no_progress):
        self.cluster, self.out, self.token, self.smoke, self.progress = cluster, out, token, smoke, progress

    def scrub(self, text: str) -> str:
        return self.token.scrub(text) if self.token else text

    def run(self, step: Step) -> None:
        self.out(f"- {step.title}")
        shown = no_progress if step.action == "smoke" else self.progress   # smoke shows its own: one live line
        try:
            with shown(step.title) as update:
                self._run(step, update)
        except LightrailError as err:
            if self.token and self.token.reveal() in str(err):
                raise LightrailError(self.scrub(str(err))) from None
            raise

    def _run(self, step: Step, update: Callable[[str], None]) -> None:
        if step.action == "secret":
            self.cluster.apply_secret(step.objects[0], self.token)
        elif step.action == "wait":
            self._wait(step, update)
        elif step.action == "smoke":
            self.smoke()
        elif step.tool == "kind":
            self._show(kind.run(step.args, step.timeout))
        elif step.action == "controller":
            self._show(kwok.start_controller(*step.args))
        elif step.tool == "kwokctl":
            self._show(kwok.run(step.args, step.timeout))
        else:
            stdin = to_yaml(list(step.objects)) if reads_stdin(step) else None
            self._show(self.cluster.run(step.tool, step.args, stdin, step.timeout))

    def _show(self, output: str) -> None:
        lines = self.scrub(output or "").rstrip().splitlines()
        for line in lines[-OUTPUT_LINES:]:
            self.out(f"    {line}")

    def _wait(self, step: Step, update: Callable[[str], None]) -> None:
        stop = threading.Event()
        objects = list(step.objects)
        try:
            events = self.cluster.watch(wait.watch_specs(objects), stop)
            wait.follow(objects, events, step.timeout, self.out, logs_for=self.cluster.logs, update=update)
        finally:
            stop.set()


def run_steps(steps: list[Step], executor, journal: Journal) -> None:
    for step in steps:
        journal.started.append(step)
        executor.run(step)
        journal.finished += 1


@contextmanager
def sigterm_as_interrupt():
    """Treat SIGTERM (a CI job cancelled, `kill`) like Ctrl-C, so every cleanup and report still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
