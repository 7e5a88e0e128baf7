"""The Hugging Face token: read once, held in memory, sent only through the API.

A `Token` prints as `<redacted>` wherever it ends up (f-strings, reprs, tracebacks), and
`scrub` removes its value from any text a tool or the API hands back before we show it. The
Secret we create carries a salted, slow digest of the token in an annotation (PBKDF2 with a random
salt: no lookup table or cheap guessing from metadata), so a second deploy can tell "same token"
without reading the Secret's data back.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Mapping

from lightrail.errors import LightrailError
from lightrail.plan import Plan

REDACTED = "<redacted>"
SECRET_KEY = "HF_TOKEN"
DIGEST_ANNOTATION = "lightrail.dev/token-digest"
_SCHEME, _ROUNDS = "pbkdf2-sha256", 200_000


class Token:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The value, for the one API call that stores it."""
        return self._value

    def digest(self, salt: bytes | None = None) -> str:
        """`pbkdf2-sha256$ROUNDS$SALT$HASH`, with a fresh random salt unless one is given."""
        salt = os.urandom(16) if salt is None else salt
        derived = hashlib.pbkdf2_hmac("sha256", self._value.encode(), salt, _ROUNDS)
        return "$".join((_SCHEME, str(_ROUNDS), _b64(salt), _b64(derived)))

    def matches(self, digest: str | None) -> bool:
        """Whether a digest made by `digest` is of this token."""
        parts = (digest or "").split("$")
        if len(parts) != 4 or parts[:2] != [_SCHEME, str(_ROUNDS)]:
            return False
        try:
            salt = base64.urlsafe_b64decode(parts[2] + "==")
        except ValueError:
            return False
        return hmac.compare_digest(self.digest(salt), digest)

    def scrub(self, text: str) -> str:
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Token is never pickled or written anywhere")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def read_token(token_file: str | None, env: Mapping[str, str] = os.environ) -> Token | None:
    """The token from --hf-token-file, else from HF_TOKEN, else None. Errors never quote it."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as err:
            raise LightrailError(f"cannot read --hf-token-file {path}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise LightrailError(f"--hf-token-file {path} is not a text file; valid: a file holding only the token") \
                from None
        if not value:
            raise LightrailError(f"--hf-token-file {path} is empty")
        return Token(_one_word(value, f"--hf-token-file {path}"))
    value = env.get("HF_TOKEN", "").strip()
    return Token(_one_word(value, "HF_TOKEN")) if value else None


def _one_word(value: str, source: str) -> str:
    """A token has no whitespace inside; a file or variable holding more would break the HTTP header it goes into."""
    if any(ch.isspace() for ch in value):
        raise LightrailError(f"{source} holds more than one word (whitespace inside the token); "
                             "valid: only the token, e.g. hf_...")
    return value


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
