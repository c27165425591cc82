"""The next attempt's saved guest, restored in the background while this attempt runs.

A restore is most of a restored attempt's own cost (0.5-0.9 s of a 1.4 s attempt under
TCG: libvirt starts QEMU, reads back the guest's memory and asks QEMU for the guest CPU
property by property), and nothing in it depends on the attempt before: the guest it
restores is the saved one, not the one that just ran. So while one saved guest runs an
attempt, the other is restored, paused, behind it, once the dump and destroy of its own
last attempt are over (restore reuses the saved name). Its console is attached there too
(a socket's connect is off the attempt's path then; a lab host's pty console, which QEMU
7.2 notices only at a poll it runs once a second while the guest is silent, has had that
poll by then). The next attempt then only resumes it (:class:`reprolab.run.ahead.Ahead`).

A restored domain has no AUTODESTROY (see :mod:`reprolab.run.snapshot`); one restored
ahead and never used is destroyed by :meth:`PreRestore.discard`, which the session calls
at close, and the run's metadata tag lets the next run's reaper find it after a kill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from reprolab.console import Console
from reprolab.run.ahead import Ahead
from reprolab.virt.domain import Domain

if TYPE_CHECKING:
    from reprolab.run.snapshot import SavedGuest


class PreRestore(Ahead[Domain]):
    """One saved guest being restored ahead of its attempt."""

    def __init__(self, saved: SavedGuest, waits: tuple[Callable[[], None], ...],
                 stale: Domain | None, restore: Callable[[], Domain],
                 attach: Callable[[Domain], Console] | None = None) -> None:
        super().__init__(saved.name, restore, lambda domain: domain, attach)
        self.saved = saved
        #: Until the saved guest's last attempt no longer holds its name: its dump and
        #: destroy (not its triage, which reads the vmcore file).
        self.waits = waits
        #: That attempt's domain when it was not destroyed yet (a kept guest).
        self.stale = stale

    def before(self) -> None:
        for wait in self.waits:
            wait()
        if self.stale is not None:
            self.stale.destroy()
            self.stale.wait_gone()
