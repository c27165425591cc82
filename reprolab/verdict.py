"""Kernel outcomes of an attempt, and what counts as "reproduced".

Outcomes are values, not exceptions: an attempt that hit an unrelated crash is an
``other-crash`` result that bisection logs and ignores, and an infrastructure failure is an
``infra-error`` that never decides anything about the kernel.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reprolab.errors import UserError
from reprolab.triage.stacks import CONSOLE, Stack


class Outcome(enum.StrEnum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not-reproduced"
    OTHER_CRASH = "other-crash"
    #: The guest stopped making progress and no kernel report names why: the console went
    #: silent, or the guest watchdog fired, with nothing printed.
    HANG = "hang"
    INFRA_ERROR = "infra-error"


#: Outcomes that say the kernel died or wedged: each one fails a regression test.
KERNEL_FAILURES = frozenset({Outcome.REPRODUCED, Outcome.OTHER_CRASH, Outcome.HANG})


@dataclass(frozen=True)
class Observed:
    """What an attempt saw, reduced to what an expectation is matched against."""

    #: A fatal report or event: the kernel died, hung or was dumped.
    crashed: bool
    #: The console's report, fatal or not (a WARNING, "sched: RT throttling activated").
    title: str | None = None
    alt_titles: tuple[str, ...] = ()
    kind: str | None = None
    frame: str | None = None
    frames: tuple[str, ...] = ()
    events: tuple[str, ...] = ()  # event kinds in order of arrival
    #: A hang with no kernel report: the attempt stopped on silence or the guest watchdog.
    hung: bool = False
    #: Where ``frame``/``frames`` were read: the console, or the kernel log in the vmcore.
    report_source: str = CONSOLE
    #: Stacks the vmcore holds (every CPU's, D-state tasks'), matched like the report's.
    stacks: tuple[Stack, ...] = ()


@dataclass(frozen=True)
class Expectation:
    """The signature that counts as "reproduced" for a test case.

    Every field given must match; ``events`` must all be seen, in that order (for
    "RT throttling, then the watchdog fires"). ``title`` is a regular expression matched
    against the whole title or any alternative title.
    """

    title: str | None = None
    kind: str | None = None
    frame: str | None = None
    in_stack: str | None = None
    events: tuple[str, ...] = field(default=())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, where: str) -> Expectation:
        data = dict(data or {})
        known = {"title", "kind", "frame", "in_stack", "events"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(
                f"{where}: unknown expect key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        events = data.get("events", ())
        if isinstance(events, str):
            events = (events,)
        exp = cls(
            title=data.get("title"),
            kind=data.get("kind"),
            frame=data.get("frame"),
            in_stack=data.get("in_stack"),
            events=tuple(str(e) for e in events),
        )
        if exp.title is not None:
            try:
                re.compile(exp.title)
            except re.error as err:
                raise UserError(
                    f"{where}: expect title {exp.title!r} is not a regex: {err}"
                ) from err
        if exp.empty:
            raise UserError(f"{where}: expect needs at least one of {', '.join(sorted(known))}")
        return exp

    @property
    def empty(self) -> bool:
        return not (self.title or self.kind or self.frame or self.in_stack or self.events)

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.__dict__.items() if v]
        return ", ".join(parts)

    def matches(self, seen: Observed) -> bool:
        if self.events and not _in_order(self.events, seen.events):
            return False
        needs_report = self.title or self.kind or self.frame or self.in_stack
        if not needs_report:
            return True
        if seen.title is None and seen.kind is None:
            return False
        if self.title is not None:
            titles = [t for t in (seen.title, *seen.alt_titles) if t]
            if not any(re.fullmatch(self.title, t) for t in titles):
                return False
        if self.kind is not None and seen.kind != self.kind:
            return False
        return not (self.frame or self.in_stack) or self.found_in(seen) is not None

    def found_in(self, seen: Observed) -> str | None:
        """Where ``frame`` and ``in_stack`` were both met: the report ("console", or "kernel
        log in vmcore"), else the first vmcore stack ("cpu 1 in vmcore", "task 42 in
        vmcore"). None when nowhere, or when neither is expected."""
        if not (self.frame or self.in_stack):
            return None
        candidates = [(seen.report_source, seen.frame, seen.frames)]
        candidates += [(s.where, s.guilty, s.frames) for s in seen.stacks]
        for where, guilty, frames in candidates:
            if ((self.frame is None or guilty == self.frame)
                    and (self.in_stack is None or self.in_stack in frames)):
                return where
        return None


def _in_order(wanted: Sequence[str], seen: Sequence[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


def classify(expect: Expectation, seen: Observed) -> Outcome:
    if expect.matches(seen):
        return Outcome.REPRODUCED
    if seen.hung:
        return Outcome.HANG
    if seen.crashed:
        return Outcome.OTHER_CRASH
    return Outcome.NOT_REPRODUCED
