"""A guest brought up paused in the background, its console attached, for the next attempt.

Starting a domain is a fixed cost of every attempt that does not depend on the attempt
before it: libvirt starts QEMU and then asks it for the guest CPU property by property
(about 400 QMP round trips; 0.5-0.6 s of a 4 s cold attempt under TCG, more than half of
what a cold attempt costs over bare QEMU). While one attempt's guest boots and runs, the
next one's is started paused behind it (:mod:`reprolab.run.startahead` for a cold boot,
:mod:`reprolab.run.prerestore` for a snapshot restore), and the next attempt only resumes
it. Its console is attached there too, so a socket's connect is off the path as well.

One brought up and never used (the case hit and stopped, or the run ended) is destroyed by
:meth:`Ahead.discard`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Self, TypeVar

from reprolab.console import Console
from reprolab.errors import InfraError
from reprolab.virt.domain import Domain

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Ahead(Generic[T]):
    """One guest being brought up ahead of its attempt; ``T`` is what ``prepare`` yields
    (a restored :class:`Domain`, or a cold start's domain with its spec)."""

    #: Names the thread and the log lines.
    label: str
    #: Brings the guest up, paused.
    prepare: Callable[[], T]
    #: The domain in what ``prepare`` yielded.
    domain_of: Callable[[T], Domain]
    #: Attaches a console to the domain (its log is moved into the attempt's).
    attach: Callable[[Domain], Console] | None = None
    value: T | None = None
    #: That console; None when attaching failed (the attempt attaches its own).
    console: Console | None = None
    error: BaseException | None = None
    #: How long ``prepare`` took, off the critical path.
    seconds: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Self:
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"ahead-{self.label}")
        self.thread.start()
        return self

    def before(self) -> None:
        """What must be over before ``prepare`` (nothing, unless a subclass says)."""

    def _run(self) -> None:
        try:
            self.before()
            t0 = time.monotonic()
            value = self.prepare()
            self.seconds = time.monotonic() - t0
            self.value = value
        except BaseException as exc:  # handed to take(): the attempt does it itself
            self.error = exc
            return
        if self.attach is not None:
            try:
                self.console = self.attach(self.domain_of(value))
            except InfraError as exc:
                log.warning("console of %s not attached ahead: %s", self.label, exc)

    def done(self) -> bool:
        """Brought up (or failed): :meth:`take` would not wait."""
        return self.thread is not None and not self.thread.is_alive()

    def take(self) -> T | None:
        """What ``prepare`` yielded, the guest paused; None when it failed (logged: the
        attempt then does it in its own time and meets the same error there, typed)."""
        assert self.thread is not None
        self.thread.join()
        if self.error is not None:
            log.warning("bringing up %s ahead failed: %s", self.label, self.error)
        return self.value

    def discard(self) -> None:
        """Never used: the guest goes (the run is over, or the next attempt is another's)."""
        value = self.take()
        if self.console is not None:
            self.console.close()
            self.console.log_path.unlink(missing_ok=True)
        if value is not None:
            self.domain_of(value).destroy()
