"""The Hugging Face token: read once, held in memory, sent only through the API.

A `Token` prints as `<redacted>` wherever it ends up (f-strings, reprs, tracebacks), and
`scrub` removes its value from any text a tool or the API hands back before we show it. The
Secret we create carries a SHA-256 digest of the token in an annotation, so a second deploy can
tell "same token" without reading the Secret's data back.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

from lightrail.errors import LightrailError
from lightrail.plan import Plan

REDACTED = "<redacted>"
SECRET_KEY = "HF_TOKEN"
DIGEST_ANNOTATION = "lightrail.dev/token-sha256"


class Token:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The value, for the one API call that stores it."""
        return self._value

    def digest(self) -> str:
        return hashlib.sha256(self._value.encode()).hexdigest()

    def scrub(self, text: str) -> str:
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Token is never pickled or written anywhere")


def read_token(token_file: str | None, env: Mapping[str, str] = os.environ) -> Token | None:
    """The token from --hf-token-file, else from HF_TOKEN, else None. Errors never quote it."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as err:
            raise LightrailError(f"cannot read --hf-token-file {path}: {err.strerror}") from None
        if not value:
            raise LightrailError(f"--hf-token-file {path} is empty")
        return Token(value)
    value = env.get("HF_TOKEN", "").strip()
    return Token(value) if value else None


def secret_object(plan: Plan, token: Token) -> dict:
    """The Secret model servers read HF_TOKEN from, without its data (the executor adds it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": plan.hf_secret, "namespace": plan.namespace, "labels": dict(plan.labels),
                     "annotations": {DIGEST_ANNOTATION: token.digest()}},
        "type": "Opaque",
    }


def with_redacted_data(obj: dict) -> dict:
    """A Secret as dry runs and logs show it."""
    return {**obj, "stringData": {SECRET_KEY: REDACTED}} if obj.get("kind") == "Secret" else obj
