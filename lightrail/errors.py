"""The one exception users see: a short message that says what is wrong and how to fix it."""


class LightrailError(Exception):
    """A user-facing error. tasks.py prints `error: <message>` and exits non-zero."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


def choose(kind: str, value: str, choices) -> str:
    """Return `value` if it is one of `choices`, else raise an error naming the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise LightrailError(f"unknown {kind} {value!r}; valid: {', '.join(choices)}")
    return value
