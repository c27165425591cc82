"""A crash signature: the stable key attempts are grouped by and bisection compares.

Titles carry detail that moves between occurrences of one bug (a lockdep title names the
lock's call site, a panic title its message); kind + guilty frame is what a person means by
"the same crash" when asking whether a commit still reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

from reprolab.errors import UserError


@dataclass(frozen=True, order=True)
class Signature:
    kind: str
    frame: str | None = None

    @property
    def key(self) -> str:
        """``kind:frame`` ("hard-lockup:tg_unthrottle_up"), or just ``kind`` without a frame."""
        return f"{self.kind}:{self.frame}" if self.frame else self.kind

    @classmethod
    def parse(cls, key: str) -> Signature:
        kind, sep, frame = key.strip().partition(":")
        if not kind or (sep and not frame):
            raise UserError(f"bad crash signature {key!r}: expected KIND or KIND:FRAME")
        return cls(kind, frame or None)

    def matches(self, other: Signature) -> bool:
        """Same kind, and same frame when both name one (a frameless key matches any frame)."""
        if self.kind != other.kind:
            return False
        return self.frame is None or other.frame is None or self.frame == other.frame

    def __str__(self) -> str:
        return self.key
