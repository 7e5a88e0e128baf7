"""Extra vLLM flags (`--vllm-arg`): refused before anything is rendered when vLLM would refuse them at pod start,
or when they would break what the pattern and the probes rely on.

The check uses the OpenAI-server argument parser of the vLLM installed here (pinned in
patterns/versions.yaml `python`; the images may pin another release, whose flags can differ a little),
imported only when extra flags are given: importing vLLM takes seconds.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys

from lightrail.errors import LightrailError

# Flags Lightrail sets itself; changing them breaks routing, probes or Services.
RESERVED = {
    "--model": "the model comes from --model",
    "--served-model-name": "the served name is the model name clients, routing and smoke use",
    "--port": "probes, Services and the InferencePool target port 8000",
    "--host": "probes and Services reach the pod on all interfaces",
    "--uds": "probes and Services need the TCP port 8000",
}


@contextlib.contextmanager
def _silenced():
    """stdout and stderr to /dev/null at the descriptor level (vLLM's import writes from several places)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


class _Refused(Exception):
    pass


def check_extra_args(extra: tuple[str, ...], pattern_args: tuple[str, ...], pattern: str) -> None:
    """Raise LightrailError for a flag that is malformed, reserved, contradicts the pattern or vLLM does not know."""
    needed = {a.split("=", 1)[0] for a in pattern_args}
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or len(flag) < 3 or any(ch.isspace() for ch in flag) or flag == "--help":
            raise LightrailError(f"--vllm-arg {arg!r} is not a vLLM flag; valid: --name or --name=value, "
                                 "e.g. --vllm-arg=--max-model-len=8192")
        if flag in RESERVED:
            raise LightrailError(f"--vllm-arg {flag} is set by Lightrail ({RESERVED[flag]}); valid: any other vLLM flag")
        opposite = "--" + flag[5:] if flag.startswith("--no-") else "--no-" + flag[2:]
        if opposite in needed:
            raise LightrailError(f"--vllm-arg {flag} contradicts pattern {pattern!r}, which needs {opposite}")
    if extra:
        _parse(tuple(extra))


def _parse(argv: tuple[str, ...]) -> None:
    if importlib.util.find_spec("vllm") is None:   # not installed here: the pod's vLLM will be the judge
        return
    parser, version = _parser()
    try:
        parser.parse_args(list(argv))
    except _Refused as err:
        raise LightrailError(f"--vllm-arg {' '.join(argv)}: vLLM {version} (installed here) refuses it: {err}",
                             fix="see `vllm serve --help`") from None


@functools.lru_cache(maxsize=1)
def _parser():
    with _silenced():   # importing vLLM logs platform warnings (Triton, CPU); an error must stay one line
        import vllm
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Raising(FlexibleArgumentParser):
        def error(self, message):
            raise _Refused(message)

        def exit(self, status=0, message=None):
            raise _Refused((message or "").strip() or "invalid arguments")

    return make_arg_parser(Raising(prog="vllm serve")), vllm.__version__
