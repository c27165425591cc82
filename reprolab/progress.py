"""What a running attempt is doing, as typed events for whoever shows progress.

The core (the session) reports phases here; the CLI subscribes a renderer. The core never
imports the CLI or the pytest plugin, and nothing here prints: with no subscriber an event
costs a list walk. Subscribers are process-wide because the pytest plugin creates its
sessions itself, and ``reprolab run`` (which calls pytest in-process) must still see them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)


class Phase(StrEnum):
    BUILDING = "building"     # kernel and image from the cache, or built now
    BOOTING = "booting"       # domain started, console attached, waiting for ready
    RUNNING = "running"       # the test body runs
    EVENT = "event"           # a guest event was seen (phase unchanged)
    CRASHED = "crashed"       # a fatal event: the rest of the report is being read
    DUMPING = "dumping"       # taking the vmcore
    TRIAGING = "triaging"     # console report and vmcore dossier
    DONE = "done"             # the attempt has its result


@dataclass(frozen=True)
class ProgressEvent:
    case: str
    attempt: int
    phase: Phase
    #: The attempt directory (known from the start) and the live console log in it.
    directory: Path
    #: Guest events seen so far in this attempt (kinds, in order).
    events: tuple[str, ...] = ()
    #: The outcome, only on DONE; a kernel build step or an event's line otherwise.
    detail: str = ""
    at: float = field(default_factory=time.monotonic)

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"


Listener = Callable[[ProgressEvent], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


@contextmanager
def subscribed(listener: Listener) -> Iterator[None]:
    subscribe(listener)
    try:
        yield
    finally:
        unsubscribe(listener)


def emit(event: ProgressEvent) -> None:
    """Tell every subscriber; a failing display never fails an attempt."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            log.debug("progress listener failed", exc_info=True)
