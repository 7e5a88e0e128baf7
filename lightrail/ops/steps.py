"""Operations as data: each step is one command or API call, printable before it runs.

Planning functions return lists of Steps; an executor runs them (or, for --dry-run, prints
them with `show`). A step lists the changes it makes, so a rollback can be planned from the
steps that started.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping

from lightrail.ops.objects import FIELD_MANAGER, ref
from lightrail.ops.secrets import with_redacted_data
from lightrail.ops.target import Target
from lightrail.render import to_yaml

REQUEST_TIMEOUT = 60   # seconds for each API request a tool makes


@dataclass(frozen=True)
class Change:
    """One thing a step changes: an object (with its state before) or a helm release."""

    what: str                       # "Deployment ns/name" or "helm release name"
    previous: dict | None = None    # the live object before the step; None when the step creates it
    release: str = ""
    revision: int | None = None     # the release's revision before the step; None when new


@dataclass(frozen=True)
class Step:
    title: str
    action: str = "run"             # run: a pinned tool | secret: the API | wait | smoke | controller
    tool: str = ""
    args: tuple[str, ...] = ()
    objects: tuple[dict, ...] = ()  # what the step sends (on stdin, through the API, via helm) or waits for
    files: Mapping[str, str] = field(default_factory=dict)   # inputs the tool reads, shown by dry runs
    timeout: float = 300
    changes: tuple[Change, ...] = ()


def apply(target: Target, objects: list[dict], title: str, changes=(), force: bool = False,
          timeout: float = 300, source: str = "-") -> Step:
    """`kubectl apply --server-side` of objects on stdin, or of a pinned manifest URL (field manager: ours)."""
    args = target.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                          *(["--force-conflicts"] if force else []), f"--request-timeout={REQUEST_TIMEOUT}s", "-f", source)
    return Step(title, tool="kubectl", args=args, objects=tuple(objects), timeout=timeout, changes=tuple(changes))


def delete(target: Target, objects: list[dict], title: str, timeout: float = 300, wait: bool = True) -> Step:
    """`kubectl delete -f -` of object stubs, waiting until they are gone unless the caller waits itself
    (teardown does, and names what a finalizer still holds where kubectl would only say "timed out")."""
    args = target.kubectl("delete", "--ignore-not-found", f"--wait={str(wait).lower()}", f"--timeout={int(timeout)}s",
                          f"--request-timeout={REQUEST_TIMEOUT}s", "-f", "-")
    return Step(title, tool="kubectl", args=args, objects=tuple(objects), timeout=timeout + 30)


def show(step: Step, number: int) -> str:
    """What a dry run prints for a step: the command, then everything it sends and reads."""
    lines = [f"[{number}] {step.title}"]
    if step.action == "run":
        lines.append("    $ " + shlex.join([step.tool, *step.args]))
    elif step.action == "secret":
        lines.append(f"    API: server-side apply {', '.join(ref(o) for o in step.objects)} (the HF token given, "
                     "never shown)")
    elif step.action == "controller":
        lines.append(f"    local process: {step.args[1]} (built from its pinned Go module), kubeconfig of kwok cluster "
                     f"{step.args[0]}")
    elif step.action == "wait":
        lines.append(f"    watch until ready (timeout {step.timeout:.0f} s): "
                     + ", ".join(ref(o) for o in step.objects))
    for name, text in step.files.items():
        lines.append(f"    --- file {name} ---")
        lines.extend("    " + line for line in text.rstrip().splitlines())
    if step.objects and step.action in ("run", "secret"):
        lines.append("    --- stdin ---" if reads_stdin(step) else "    --- objects ---")
        body = to_yaml([with_redacted_data(o) for o in step.objects])
        lines.extend("    " + line for line in body.rstrip().splitlines())
    return "\n".join(lines)


def reads_stdin(step: Step) -> bool:
    return step.action == "run" and step.args[-2:] == ("-f", "-")
