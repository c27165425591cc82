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

from reprolab.problems import Problems
from reprolab.triage.stacks import CONSOLE, Stack


class Outcome(enum.StrEnum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not-reproduced"
    OTHER_CRASH = "other-crash"
    #: The guest stopped making progress and no kernel report names why: the console went
    #: silent, or the guest watchdog fired, with nothing printed.
    HANG = "hang"
    INFRA_ERROR = "infra-error"
    #: Bisection only: the commit's kernel cannot be built or booted (git bisect's 125).
    UNTESTABLE = "untestable"


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
    def from_mapping(cls, data: Any, *, where: str,
                     problems: Problems | None = None) -> Expectation:
        """Validate a marker's ``expect={...}``: a misspelt kind would make every crash
        "other" and a regression test pass while the bug reproduces, so kinds and event
        names must be ones the parser and the harness produce."""
        from reprolab.detect.events import event_kinds
        from reprolab.detect.kinds import ALL_KINDS

        p = problems if problems is not None else Problems(where)
        known = {"title", "kind", "frame", "in_stack", "events"}
        if data is not None and not isinstance(data, Mapping):
            p.add("expect", data, "expect must be a mapping such as {'kind': 'soft-lockup'} "
                  f"(keys: {', '.join(sorted(known))})")
            data = {}
        data = dict(data or {})
        for key in sorted(set(data) - known, key=str):
            p.add(f"expect.{key}", data[key], f"unknown expect key {key!r} "
                  f"(known: {', '.join(sorted(known))})")
        for key in ("title", "kind", "frame", "in_stack"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                p.add(f"expect.{key}", value, f"expect {key} must be a string")
                data.pop(key)
        kind = data.get("kind")
        if kind is not None and kind not in ALL_KINDS:
            p.add("expect.kind", kind, f"not a kind the parser reports (one of: "
                  f"{', '.join(ALL_KINDS)})")
        events = data.get("events", ())
        if isinstance(events, str):
            events = (events,)
        if not isinstance(events, list | tuple):
            p.add("expect.events", events, "expect events must be a list of event names")
            events = ()
        allowed = event_kinds()
        for event in events:
            if event not in allowed:
                p.add("expect.events", event, f"not an event name (one of: "
                      f"{', '.join(allowed)})")
        exp = cls(
            title=data.get("title"),
            kind=kind,
            frame=data.get("frame"),
            in_stack=data.get("in_stack"),
            events=tuple(str(e) for e in events),
        )
        if exp.title is not None:
            try:
                re.compile(exp.title)
            except re.error as err:
                p.add("expect.title", exp.title, f"expect title is not a regex: {err}")
        if exp.empty and not p.lines:
            p.add("expect", data, f"expect needs at least one of {', '.join(sorted(known))}")
        if problems is None:
            p.raise_if_any()
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
    """An empty expectation (an exploration run) never reproduces: a crash it sees is
    recorded as ``other-crash``, with its title, and nothing is judged."""
    if not expect.empty and expect.matches(seen):
        return Outcome.REPRODUCED
    if seen.hung:
        return Outcome.HANG
    if seen.crashed:
        return Outcome.OTHER_CRASH
    return Outcome.NOT_REPRODUCED
