"""Every bad key of a test case's marker, found in one pass.

A user with three typos should not need three runs to find them: validation records each
problem (one line naming the test, the key, the value and what is allowed) and raises once,
at the end, with all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reprolab.errors import UserError


class MarkerError(UserError):
    """One or more bad marker keys; ``problems`` holds one line per key."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Problems:
    """Collects problems for one test case (``where`` names it)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.lines: list[str] = []

    def add(self, key: str, value: Any, what: str) -> None:
        self.lines.append(f"{self.where}: {key}={show(value)}: {what}")

    def user_error(self, key: str, value: Any, exc: UserError) -> None:
        """A problem found by a parser that raises (kernel spec, memory size)."""
        if isinstance(exc, MarkerError):
            self.lines.extend(exc.problems)
        else:
            self.add(key, value, str(exc))

    def raise_if_any(self) -> None:
        if self.lines:
            raise MarkerError(self.lines)
