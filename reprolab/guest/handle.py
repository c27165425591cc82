"""A booted guest as a test case sees it, and the evidence it leaves.

The handle owns the watch loop: every console byte goes through the crash parser, libvirt's
view of the domain (pvpanic, watchdog) is polled between reads, and the first fatal event
stops whatever the test is waiting on. After a fatal event the console is read a little
longer, so the report's stack trace is complete before the domain is paused and dumped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from reprolab.console import Console
from reprolab.detect.events import HANG_KINDS, NO_OUTPUT, PVPANIC, WATCHDOG_FIRE, GuestEvent, Source
from reprolab.detect.parser import ConsoleParser
from reprolab.errors import GuestDied, InfraError
from reprolab.guest.inflight import call_watched
from reprolab.virt.domain import Domain
from reprolab.virt.hostfiles import HostFiles, LocalFiles

if TYPE_CHECKING:
    from reprolab.detect.report import CrashReport
    from reprolab.ssh import SshChannel

T = TypeVar("T")

#: After a fatal event, read on until the console is quiet this long (or SETTLE_MAX passes).
SETTLE_QUIET = 2.0
SETTLE_MAX = 15.0
#: Once the kernel can print no more (libvirt holds it crashed, or panic() printed its
#: trailer), only bytes already on their way through QEMU's chardev and libvirt's stream
#: can come: they take milliseconds, this is many times that (it was 0.5 s, then 0.2 s,
#: paid by every crashed attempt, a third of a restored one).
SETTLE_DRAIN = 0.1
#: How often settle asks libvirt whether the guest stopped while the console is silent: the
#: pvpanic stop often lands after the report's last byte (later still while libvirtd
#: restores another guest), and a 0.25 s read then cost 0.15-0.25 s of restored attempts.
SETTLE_POLL = 0.05
#: The last line panic() prints; nothing follows it but the halt loop.
_PANIC_TRAILER = "---[ end Kernel panic"


class Guest:
    """A running guest: its console, SSH channel (when the image has one) and events."""

    def __init__(
        self,
        domain: Domain,
        console: Console,
        directory: Path,
        *,
        silence_timeout: float | None = None,
    ) -> None:
        self.domain = domain
        self.console = console
        self.directory = directory
        self._ssh: SshChannel | None = None
        self.events: list[GuestEvent] = []
        self.silence_timeout = silence_timeout
        self.ready = False
        self.boot_seconds: float | None = None
        #: What closing found about the evidence (a truncated serial.log): result notes.
        self.notes: list[str] = []
        self._serial_collected = False
        self._parser = ConsoleParser()
        self._teardown: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._last_state_poll = 0.0
        #: Seconds without console output when a hang event (silence, watchdog) fired.
        self.hang_seconds: float | None = None
        #: Console offset when the harness injected its NMI (what follows is its doing).
        self.nmi_position: int | None = None
        console.add_observer(self._on_console)
        console.stop_check = self._watch_stop
        console.closed_reason = self._state_after_close

    @property
    def ssh(self) -> SshChannel | None:
        return self._ssh

    @ssh.setter
    def ssh(self, channel: SshChannel | None) -> None:
        """Every call on the channel runs under :meth:`watched`: a deadline, the console read."""
        self._ssh = channel
        if channel is not None:
            channel.watch = self.watched

    def watched(self, fn: Callable[[], T], timeout: float | None, what: str) -> T:
        """Run a guest call in a worker while this thread reads the console and libvirt.

        Ends at the call's deadline (:class:`CallTimeout`) or the guest's first fatal event
        (:class:`GuestStopped`), whichever comes first; see :mod:`reprolab.guest.inflight`.
        """
        ssh = self._ssh
        return call_watched(fn, timeout=timeout, what=what, poll=self.poll,
                            stop=self.stop_reason,
                            abort=ssh.abort if ssh is not None else lambda: None)

    def mark_started(self, t0: float) -> None:
        """Event times count from ``t0``: the moment the guest was resumed or restored."""
        self._t0 = t0

    # -- events ----------------------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() - self._t0

    def elapsed(self) -> float:
        """Seconds since the guest was resumed: the clock its events' ``at`` counts on."""
        return self._now()

    def _on_console(self, data: bytes) -> None:
        for ev in self._parser.feed(data):
            self.events.append(
                GuestEvent(ev.kind, ev.line, "console", bool(ev.fatal), self._now(), ev.cpu)
            )

    def record(self, kind: str, line: str, source: Source) -> None:
        """A non-fatal event of the harness's own (an NMI it injected): on the timeline."""
        self.events.append(GuestEvent(kind, line, source, False, self._now()))

    def mark_hang(self, kind: str, line: str) -> None:
        """A hang the harness found itself (the liveness probe): fatal, on the timeline."""
        if self.fatal_event is None:
            self.hang_seconds = self.console.silence()
        self._add(kind, line, "harness", True)

    def _add(self, kind: str, line: str, source: str, fatal: bool) -> None:
        if not any(e.kind == kind for e in self.events):
            self.events.append(GuestEvent(kind, line, source, fatal, self._now()))  # type: ignore[arg-type]

    def poll(self, timeout: float = 0.25) -> None:
        """Read the console for up to ``timeout`` s and look at the domain's state."""
        self.console.pump(timeout)
        self._check_state()

    def _watch_stop(self) -> str | None:
        """The console's stop check: waits on the console also watch libvirt and silence."""
        self._check_state()
        return self.stop_reason()

    def _state_after_close(self, wait: float = 1.0) -> str:
        """The domain's state once libvirt has caught up with a closed console.

        Whether QEMU is gone (and why: the guest powered off, QEMU crashed) or only the
        console stream was cut is the first question about a lost guest; libvirt may still
        say "running" for a moment after QEMU's exit closed the console.
        """
        state = self.domain.state()
        deadline = time.monotonic() + wait
        while state.state == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            state = self.domain.state()
        return f"the domain is {state}"

    def _check_state(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_state_poll >= 0.5:
            self._last_state_poll = now
            state = self.domain.state()
            if state.crashed:
                self._add(PVPANIC, "libvirt: guest reported a panic (pvpanic)", "libvirt", True)
            elif state.watchdog_fired:
                if self.fatal_event is None:
                    self.hang_seconds = self.console.silence()
                self._add(WATCHDOG_FIRE, "libvirt: domain paused by its watchdog", "libvirt",
                          True)
            elif state.gone:
                raise GuestDied(
                    f"domain {self.domain.name} is gone ({state}): QEMU exited",
                    detail=self.console.tail(),
                )
        if (
            self.ready
            and self.silence_timeout is not None
            and self.fatal_event is None
            and self.console.silence() > self.silence_timeout
        ):
            self.hang_seconds = self.console.silence()
            self._add(NO_OUTPUT, f"no console output for {self.silence_timeout:.0f} s",
                      "harness", True)

    @property
    def fatal_event(self) -> GuestEvent | None:
        return next((e for e in self.events if e.fatal), None)

    def hung(self, report: CrashReport | None) -> bool:
        """Did the attempt end on a hang no kernel report explains?

        The first fatal event is the harness's silence timeout or the guest watchdog, and the
        console holds no fatal report from before it (a report the harness's own NMI forced
        out afterwards shows the stacks, not the cause).
        """
        first = self.fatal_event
        if first is None or first.kind not in HANG_KINDS:
            return False
        if report is None or not report.fatal:
            return True
        return self.nmi_position is not None and report.start >= self.nmi_position

    def stop_reason(self) -> str | None:
        ev = self.fatal_event
        if ev is None:
            self._check_domain()
        return f"guest stopped: {ev.kind}: {ev.line}" if ev else None

    def _check_domain(self) -> None:
        """Console waits (the boot's ready marker) also notice the domain going away.

        ``virsh console`` does not always end when libvirtd dies, so without this a boot
        wait would sit out its whole timeout and call a dead libvirtd a boot timeout.
        """
        now = time.monotonic()
        if now - self._last_state_poll < 1.0:
            return
        self._last_state_poll = now
        state = self.domain.state()
        if state.gone:
            raise GuestDied(f"domain {self.domain.name} is gone ({state}) while its console "
                            "was read", detail=self.console.tail())

    def seen(self, kind: str) -> bool:
        return any(e.kind == kind for e in self.events)

    # -- what a test case calls ------------------------------------------------------------
    def wait(self, seconds: float) -> GuestEvent | None:
        """Watch the guest for ``seconds``; return early with the first fatal event."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.fatal_event is not None:
                return self.fatal_event
            self.poll(min(0.25, max(0.0, deadline - time.monotonic())))
        return self.fatal_event

    def wait_for_event(self, kind: str, timeout: float, *, stop_on_fatal: bool = True
                       ) -> GuestEvent | None:
        """Wait until an event of ``kind`` arrives.

        A fatal event ends the wait early unless ``stop_on_fatal`` is off, for events that
        follow a crash (pvpanic after the panic, the watchdog after a hang).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((e for e in self.events if e.kind == kind), None)
            if found is not None:
                return found
            if stop_on_fatal and self.fatal_event is not None:
                return None
            self.poll(0.25)
        return None

    def sh(self, command: str, timeout: float = 60.0) -> str:
        """Run a shell command over SSH when the image has it, else on the console.

        Returns its stdout; a non-zero exit raises :class:`RemoteCommandError` (an
        infrastructure error) over either channel, so one failed step means the same on
        every image."""
        if self.ssh is not None:
            return self.ssh.run(command, timeout=timeout, check=True).stdout
        # The same failure either way: a non-zero exit is a RemoteCommandError.
        return self.console.run(command, timeout=timeout).check().stdout

    def crashed_during(self, exc: BaseException, grace: float = 3.0) -> bool:
        """Did a kernel crash cause ``exc``? Then it is a verdict, not an infrastructure error.

        An SSH command or console wait fails when the guest panics under it; before calling
        that an infrastructure failure, read the console a little longer for the reason.
        """
        deadline = time.monotonic() + grace
        while self.fatal_event is None and time.monotonic() < deadline:
            try:
                self.poll(0.25)
            except InfraError:
                break
        return self.fatal_event is not None

    # -- end of the attempt ----------------------------------------------------------------
    def settle(self) -> None:
        """After a fatal event, let the kernel finish printing its report."""
        start = time.monotonic()
        while time.monotonic() - start < SETTLE_MAX:
            # libvirt's word that the guest stopped (pvpanic) ends the wait early: asked
            # every round here, not every 0.5 s as while the guest runs.
            with contextlib.suppress(InfraError):
                self._check_state(force=True)
            quiet = SETTLE_DRAIN if self._done_printing() else SETTLE_QUIET
            if self.console.silence() >= quiet or self.console.eof:
                break
            try:
                self.poll(min(SETTLE_POLL, quiet))
            except InfraError:
                break
        for ev in self._parser.close():
            self.events.append(
                GuestEvent(ev.kind, ev.line, "console", bool(ev.fatal), self._now(), ev.cpu)
            )

    def _done_printing(self) -> bool:
        """Can the kernel print no more? Waiting 2 s of silence then is pure cost: every
        crashed attempt paid it (pvpanic stops the guest before the trailer is printed)."""
        return self.seen(PVPANIC) or _PANIC_TRAILER in self.console.recent(400)

    def release(self) -> None:
        """Destroy the domain in the background: its memory is dumped and nothing more will
        be read from it, so libvirt's destroy (0.2 s, 1.2-1.6 s where PID 1 reaps QEMU late)
        runs while the attempt writes its dossier. :meth:`close` waits for it, or hands it
        back (``defer_teardown``)."""
        if self._teardown is None:
            self._teardown = threading.Thread(target=self.domain.destroy,
                                              name=f"teardown-{self.domain.name}", daemon=True)
            self._teardown.start()

    def close(self, *, keep: bool = False, serial_log: Path | None = None,
              files: HostFiles | None = None, defer_teardown: bool = False
              ) -> threading.Thread | None:
        """Stop the guest and bring libvirt's copy of the console into the artifacts.

        With ``defer_teardown``, a destroy :meth:`release` started is not waited for: it is
        returned, and whoever asked must join it before the run ends (the session does, so
        the next cold attempt boots while libvirt stops this one). Otherwise the guest is
        gone when this returns.
        """
        if self.ssh is not None:
            self.ssh.close()
        self.console.close()
        pending = None
        if self._teardown is not None:
            if defer_teardown and not keep and self._teardown.is_alive():
                pending = self._teardown
            else:
                self._teardown.join()
        if not keep and pending is None:
            self.domain.destroy()
        if serial_log is not None and not self._serial_collected:
            self._serial_collected = True
            from reprolab.virt.seriallog import collect_serial

            self.notes.extend(collect_serial(
                files or LocalFiles(), serial_log, self.directory / "serial.log",
                console_bytes=self.console.bytes_seen))
        return pending


StopCheck = Callable[[], str | None]
__all__ = ["Guest", "StopCheck"]
