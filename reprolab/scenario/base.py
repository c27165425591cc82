"""What every scenario shares: the four steps, guest-side process control, dying gracefully.

A scenario provokes a mechanism in a guest; the guest dying under it is usually the point.
So the steps that set a scenario up and start it raise on failure (the session then asks
the console whether a crash caused it), while the steps that stop and clean up never raise:
once the guest has a fatal event, they do nothing at all, and any other failure of theirs is
logged and forgotten. Guest-side logic is shell text, generated here and run over SSH (or the
console); long-running loads are started detached (``setsid``, every fd redirected, so the
SSH session closing does not kill them) and stopped by the process group recorded in a pid
file. The script generators are pure functions of the parameters, so unit tests read them.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from reprolab.detect.events import GuestEvent
from reprolab.errors import UserError

log = logging.getLogger(__name__)

#: Where scenarios keep pid files and counters in the guest (a tmpfs on every image).
STATE_DIR = "/run/reprolab"
#: Seconds a stop or cleanup command may take before it is given up (the guest may be stuck).
BEST_EFFORT_TIMEOUT = 30.0


class GuestLike(Protocol):
    """The part of :class:`reprolab.guest.handle.Guest` a scenario uses."""

    ssh: Any

    def sh(self, command: str, timeout: float = 60.0) -> str: ...

    def wait(self, seconds: float) -> GuestEvent | None: ...

    @property
    def fatal_event(self) -> GuestEvent | None: ...


def q(value: object) -> str:
    return shlex.quote(str(value))


def one_line(script: str) -> str:
    """``sh -c SCRIPT``: one command line whether it goes over SSH or the serial console."""
    return f"sh -c {q(script)}"


def pidfile(name: str) -> str:
    return f"{STATE_DIR}/{name}.pids"


def detached(name: str, script: str) -> str:
    """Start ``script`` in its own session, recording its process group under ``name``.

    The background child of a non-interactive shell is not a group leader, so ``setsid``
    does not fork again and ``$!`` is the new session's id: killing the negative id later
    takes every process the script started with it. (``mkdir && setsid ... &`` would put
    the mkdir in the background too, racing the pid file write.)
    """
    return (
        f"mkdir -p {STATE_DIR}; setsid sh -c {q(script)} </dev/null >/dev/null 2>&1 & "
        f"echo $! >> {pidfile(name)}"
    )


def kill_detached(name: str) -> str:
    """Kill every process group recorded under ``name``; succeeds when there is none."""
    f = pidfile(name)
    return (
        f"if [ -f {f} ]; then for p in $(cat {f}); do kill -9 -$p 2>/dev/null; "
        f"kill -9 $p 2>/dev/null; done; rm -f {f}; fi; true"
    )


def require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise UserError(f"{where}: {message}")


def cpu_list(cpus: Iterable[int] | None) -> str:
    """Shell words for the CPUs to use: the given ones, or every CPU the guest has."""
    if cpus is None:
        return "$(ls -d /sys/devices/system/cpu/cpu[0-9]* | sed 's,.*/cpu,,')"
    return " ".join(str(c) for c in cpus)


class Scenario:
    """A reusable way to provoke a mechanism: setup, inject, stop, cleanup.

    Subclasses are frozen dataclasses of their parameters and override the ``*_script``
    generators (each returns shell text, or None for nothing to do); the step methods run
    them in the guest. Override a step method itself only when it needs more than one
    command (copying a file in, waiting on the console).
    """

    name: ClassVar[str] = "scenario"
    #: Seconds the inject command may take.
    inject_timeout: ClassVar[float] = 60.0

    def setup_script(self) -> str | None:
        return None

    def inject_script(self) -> str | None:
        return None

    def stop_script(self) -> str | None:
        return kill_detached(self.name)

    def cleanup_script(self) -> str | None:
        return None

    # -- steps -----------------------------------------------------------------------------
    def setup(self, guest: GuestLike) -> None:
        script = self.setup_script()
        if script:
            guest.sh(one_line(script), timeout=120.0)

    def inject(self, guest: GuestLike) -> None:
        script = self.inject_script()
        if script:
            guest.sh(one_line(script), timeout=self.inject_timeout)

    def stop(self, guest: GuestLike) -> None:
        best_effort(guest, self.stop_script())

    def cleanup(self, guest: GuestLike) -> None:
        best_effort(guest, self.cleanup_script())

    def run(self, guest: GuestLike, seconds: float) -> GuestEvent | None:
        """Set up, inject, watch ``seconds`` (less if the guest dies), stop and clean up.

        Returns the fatal event that ended the watch, if any. Failures of setup or inject
        propagate (the session tells a crash from a broken scenario); stop and cleanup do
        not raise, so a crash is never hidden behind a failed cleanup.
        """
        try:
            self.setup(guest)
            self.inject(guest)
            return guest.wait(seconds)
        finally:
            self.stop(guest)
            self.cleanup(guest)


def best_effort(guest: GuestLike, script: str | None, timeout: float = BEST_EFFORT_TIMEOUT
                ) -> str | None:
    """Run ``script`` unless the guest is already dead; never raise."""
    if not script or guest.fatal_event is not None:
        return None
    try:
        return guest.sh(one_line(script), timeout=timeout)
    except Exception as exc:  # the guest may be dying: a stop step must not hide that
        log.info("best-effort guest command failed (%s): %s", type(exc).__name__, exc)
        return None


def read_int(guest: GuestLike, script: str, timeout: float = 30.0) -> int:
    """Run ``script`` and read the last line of its output as an integer."""
    out = guest.sh(one_line(script), timeout=timeout).strip().splitlines()
    try:
        return int(out[-1]) if out else 0
    except ValueError as exc:
        raise AssertionError(f"expected a number from the guest, got {out[-1]!r}") from exc
