"""The one exception type that reaches the user as a single line."""

from __future__ import annotations


class RecyclerError(Exception):
    """Bad input: the message names the input and the problem, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
