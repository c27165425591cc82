"""The next attempt's saved guest, restored in the background while this attempt runs.

A restore is most of a restored attempt's own cost (0.5-0.9 s of a 1.4 s attempt under
TCG: libvirt starts QEMU, reads back the guest's memory and asks QEMU for the guest CPU
property by property), and nothing in it depends on the attempt before: the guest it
restores is the saved one, not the one that just ran. So while one saved guest runs an
attempt, the other is restored, paused, behind it, once the dump and destroy of its own
last attempt are over (restore reuses the saved name). Its console is attached there too
(a socket's connect is off the attempt's path then; a lab host's pty console, which QEMU
7.2 notices only at a poll it runs once a second while the guest is silent, has had that
poll by then). The next attempt then only resumes it.

A restored domain has no AUTODESTROY (see :mod:`reprolab.run.snapshot`); one restored
ahead and never used is destroyed by :meth:`PreRestore.discard`, which the session calls
at close, and the run's metadata tag lets the next run's reaper find it after a kill.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reprolab.console import Console
from reprolab.errors import InfraError
from reprolab.virt.domain import Domain

if TYPE_CHECKING:
    from reprolab.run.snapshot import SavedGuest

log = logging.getLogger(__name__)


@dataclass
class PreRestore:
    """One saved guest being restored ahead of its attempt."""

    saved: SavedGuest
    #: Until the saved guest's last attempt no longer holds its name: its dump and
    #: destroy (not its triage, which reads the vmcore file).
    waits: tuple[Callable[[], None], ...]
    #: That attempt's domain when it was not destroyed yet (a kept guest).
    stale: Domain | None
    #: Thaws the saved disks and restores the domain, paused.
    restore: Callable[[], Domain]
    #: Attaches a console to the restored domain (its log is moved into the attempt's).
    attach: Callable[[Domain], Console] | None = None
    domain: Domain | None = None
    #: That console; None when attaching failed (the attempt attaches its own).
    console: Console | None = None
    error: BaseException | None = None
    #: How long the restore took, off the critical path.
    seconds: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> PreRestore:
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"prerestore-{self.saved.name}")
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            for wait in self.waits:
                wait()
            if self.stale is not None:
                self.stale.destroy()
                self.stale.wait_gone()
            t0 = time.monotonic()
            self.domain = self.restore()
            self.seconds = time.monotonic() - t0
        except BaseException as exc:  # handed to take(): the attempt restores it itself
            self.error = exc
            return
        if self.attach is not None:
            try:
                self.console = self.attach(self.domain)
            except InfraError as exc:
                log.warning("console of %s not attached ahead: %s", self.saved.name, exc)

    def take(self) -> Domain | None:
        """The restored domain, paused; None when restoring it failed (logged: the attempt
        then restores in its own time and meets the same error there, typed)."""
        assert self.thread is not None
        self.thread.join()
        if self.error is not None:
            log.warning("restoring %s ahead failed: %s", self.saved.name, self.error)
        return self.domain

    def discard(self) -> None:
        """Never used: the domain goes (the run is over, or the next attempt is another
        guest's)."""
        domain = self.take()
        if self.console is not None:
            self.console.close()
            self.console.log_path.unlink(missing_ok=True)
        if domain is not None:
            domain.destroy()
