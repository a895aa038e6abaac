"""The one exception type that reaches the user as a single line."""

from __future__ import annotations


def one_line(text: object, limit: int | None = None) -> str:
    """Text with its whitespace runs squeezed to single spaces, cut to `limit` characters."""
    return " ".join(str(text).split())[:limit]


class RecyclerError(Exception):
    """Bad input: the message names the input and the problem, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def format_bytes(count: float) -> str:
    """A size as people read it in a message: 3 significant figures and a decimal unit."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} TB"
