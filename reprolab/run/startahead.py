"""The next cold attempt's guest, started paused while this attempt's guest boots and runs.

A cold attempt's libvirt start (0.5-0.6 s under TCG, see :mod:`reprolab.run.ahead`) does
not depend on the attempt before it: the next attempt boots the same case, kernel and
image. So once an attempt's own domain exists, and another attempt of the case may
follow, the session starts that one's domain behind it, paused, with a fresh forwarded
port, overlay and serial log, and attaches its console. Nothing of the guest runs before
its attempt resumes it: its boot, and its clocks, start there, as a cold boot's do.

Taken only by an attempt of the same case on the same kernel and image; otherwise, and
when the case stops (a hit under ``until=first-hit``, or its last attempt), it is
destroyed. It has AUTODESTROY like any cold guest, so a killed runner leaves nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from reprolab.console import Console
from reprolab.run.ahead import Ahead
from reprolab.run.boot import Started
from reprolab.virt.domain import Domain


class StartAhead(Ahead[Started]):
    """The next attempt's cold guest, being started; ``key`` names what it was started
    for (case, kernel, image)."""

    def __init__(self, key: str, label: str, prepare: Callable[[], Started],
                 attach: Callable[[Domain], Console] | None = None) -> None:
        super().__init__(label, prepare, lambda started: started.domain, attach)
        self.key = key
