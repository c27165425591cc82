"""L2's serial console: the stdio of the VMM that L1 runs, streamed over its own SSH channel.

An L2 guest has no libvirt domain and no pty the host can attach to: its serial port is the
stdio of a QEMU process inside L1. Running that QEMU as the command of a dedicated SSH exec
channel makes the channel the console itself, both ways: what L2 prints arrives on the
channel (read by one thread, appended to ``console-l2.log``, fed to the same
:class:`~reprolab.triage.parser.ConsoleParser` as L1's console) and what is written to it
reaches L2's shell on ttyS0. A separate SSH connection keeps it apart from the test body's
commands: an aborted body call (which drops its connection) does not end L2.

When the channel ends (L1 died, the VMM exited) the reader records the exit status and the
time; the layer attribution (:mod:`reprolab.run.layers`) reads both.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from reprolab.detect.events import GuestEvent
from reprolab.detect.parser import ConsoleParser
from reprolab.errors import InfraError

if TYPE_CHECKING:
    from reprolab.guest.handle import Guest
    from reprolab.ssh import SshChannel

#: Decoded console text kept in memory for pattern waits; the log file keeps everything.
_WINDOW = 1 << 20


class L2ConsoleClosed(InfraError):
    """L2's console channel ended while a wait needed more output from it."""


class L2ConsoleTimeout(InfraError):
    """A wait on L2's console ran out; carries the console tail."""


class L2LayerBelowStopped(InfraError):
    """L1 failed (a fatal event of its own) while a wait on L2 ran."""


@dataclass(frozen=True)
class L2Exit:
    """How L2's channel ended: the VMM's exit status (None: the channel was cut) and when."""

    status: int | None
    at: float


class L2Console:
    """One L2 guest's console, read live from the moment its VMM starts."""

    def __init__(self, ssh: SshChannel, log_path: Path, *, t0: float | None = None) -> None:
        self._ssh = ssh
        self.log_path = log_path
        #: Event times count from here: pass the L1 guest's start so both layers share a clock.
        self.t0 = time.monotonic() if t0 is None else t0
        self.events: list[GuestEvent] = []
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.exit: L2Exit | None = None
        self.last_output = time.monotonic()
        self.bytes_seen = 0
        self._parser = ConsoleParser()
        self._text = ""
        self._dropped = 0
        self._lock = threading.Lock()
        self._client: Any = None
        self._chan: Any = None
        self._log: BinaryIO | None = None
        self._reader: threading.Thread | None = None
        #: Called between reads while waiting on L2: keeps L1's console read (L1's own
        #: detector) and returns a reason to stop (L1 failed), or None.
        self.watch: Callable[[], str | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, command: str) -> None:
        """Run ``command`` (the VMM, its serial port on stdio) on a new SSH connection."""
        from reprolab.ssh import SshChannel

        own = SshChannel(self._ssh.host, self._ssh.port, self._ssh.key, self._ssh.host_key,
                         self._ssh.user, gateway=self._ssh.gateway)
        try:
            conn = own._connection()  # a connection of its own, never the body's
            conn.open()
            transport = conn.client.get_transport()
            chan = transport.open_session(timeout=30.0)
            chan.set_combine_stderr(True)
            chan.exec_command(command)
        except Exception as exc:
            own.close()
            raise InfraError(f"could not start L2's VMM in L1 over SSH: "
                             f"{type(exc).__name__}: {exc}") from exc
        self._client = own
        self._chan = chan
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab", buffering=0)
        self.started_at = self.now()
        self.last_output = time.monotonic()
        self._reader = threading.Thread(target=self._read, name="l2-console", daemon=True)
        self._reader.start()

    def close(self) -> None:
        """End the channel (QEMU in L1 gets SIGHUP with it) and flush the log."""
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.close()
        if self._reader is not None:
            self._reader.join(10.0)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        with self._lock:
            for ev in self._parser.close():
                self._event(ev.kind, ev.line, bool(ev.fatal), ev.cpu)
            if self._log is not None:
                self._log.close()
                self._log = None

    # -- reading ---------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def _read(self) -> None:
        chan = self._chan
        while True:
            try:
                data: bytes = chan.recv(1 << 16)
            except Exception:
                data = b""
            if not data:
                break
            self._record(data)
        status: int | None = None
        with contextlib.suppress(Exception):
            if chan.exit_status_ready():
                status = int(chan.recv_exit_status())
        with self._lock:
            self.exit = L2Exit(status, self.now())

    def _record(self, data: bytes) -> None:
        with self._lock:
            self.bytes_seen += len(data)
            self.last_output = time.monotonic()
            if self._log is not None:
                # On a full disk the bytes still reach the waits and the detector.
                with contextlib.suppress(OSError):
                    self._log.write(data)
            self._text += data.decode(errors="replace")
            if len(self._text) > _WINDOW:
                cut = len(self._text) - _WINDOW // 2
                self._text = self._text[cut:]
                self._dropped += cut
            for ev in self._parser.feed(data):
                self._event(ev.kind, ev.line, bool(ev.fatal), ev.cpu)

    def _event(self, kind: str, line: str, fatal: bool, cpu: int | None) -> None:
        self.events.append(GuestEvent(kind, line, "console", fatal, self.now(), cpu))

    @property
    def fatal_event(self) -> GuestEvent | None:
        return next((e for e in self.events if e.fatal), None)

    @property
    def position(self) -> int:
        with self._lock:
            return self._dropped + len(self._text)

    def silence(self) -> float:
        return time.monotonic() - self.last_output

    def tail(self, lines: int = 30) -> str:
        with self._lock:
            text = self._text
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def text(self) -> str:
        with self._lock:
            return self._text

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float, *,
                 since: int | None = None, stop_on_fatal: bool = True) -> re.Match[str]:
        """Wait until ``pattern`` appears in L2's output after ``since``.

        Ends early when the channel closes (:class:`L2ConsoleClosed`) or, with
        ``stop_on_fatal``, when L2 reports a fatal event (:class:`L2ConsoleTimeout`).
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        start = self.position if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                m = rx.search(self._text, max(0, start - self._dropped))
                ended = self.exit
            if m:
                return m
            fatal = self.fatal_event
            if stop_on_fatal and fatal is not None:
                raise L2ConsoleTimeout(f"L2 stopped: {fatal.kind}: {fatal.line}",
                                       detail=self.tail())
            if ended is not None:
                raise L2ConsoleClosed(
                    f"L2's console closed (VMM exit status {ended.status}) while waiting "
                    f"for {rx.pattern!r}", detail=self.tail())
            if time.monotonic() >= deadline:
                raise L2ConsoleTimeout(f"{rx.pattern!r} did not appear on L2's console "
                                       f"within {timeout:.0f} s", detail=self.tail())
            self._pause()

    def _pause(self) -> None:
        """Between reads: let the layer below speak (and stop the wait if it failed)."""
        if self.watch is None:
            time.sleep(0.2)
            return
        reason = self.watch()
        if reason:
            raise L2LayerBelowStopped(reason, detail=self.tail())

    def wait_fatal(self, timeout: float) -> GuestEvent | None:
        """L2's first fatal event, waiting up to ``timeout`` s (None: none came)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fatal_event is not None or self.exit is not None:
                break
            self._pause()
        return self.fatal_event

    # -- writing ---------------------------------------------------------------------------
    def send(self, line: str) -> None:
        if self._chan is None or self.exit is not None:
            raise L2ConsoleClosed("L2's console is not open")
        try:
            self._chan.sendall((line.rstrip("\n") + "\n").encode())
        except Exception as exc:
            raise L2ConsoleClosed(f"writing to L2's console failed: {exc}") from exc

    def run(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command`` in L2's console shell and return its output (stdout+stderr).

        The markers are printed with printf so the echoed command line never matches them;
        the shell is first probed until it answers, since a line typed while init still
        owns the tty can vanish.
        """
        deadline = time.monotonic() + timeout
        token = secrets.token_hex(4)
        while True:
            since = self.position
            self.send(f"echo P$((6*7)){token}")
            try:
                self.wait_for(f"P42{token}", 2.0, since=since)
                break
            except L2ConsoleTimeout:
                if self.fatal_event is not None or time.monotonic() >= deadline:
                    raise
        since = self.position
        self.send(f"printf '%s%s\\n' __L2S_ {token}; {command}; "
                  f"printf '%s%s %d\\n' __L2E_ {token} $?")
        m = self.wait_for(re.compile(rf"__L2S_{token}\r?\n(?P<out>.*?)__L2E_{token} (?P<rc>\d+)",
                                     re.S), max(1.0, deadline - time.monotonic()), since=since)
        out = m.group("out").replace("\r\n", "\n")
        if int(m.group("rc")) != 0:
            raise AssertionError(f"`{command}` exited {m.group('rc')} in L2: {out[-500:]}")
        return out


#: Which L2 an L1 guest runs: the scenario attaches it, the conclusion reads it.
_L2: weakref.WeakKeyDictionary[Guest, L2Console] = weakref.WeakKeyDictionary()


def attach_l2(guest: Guest, l2: L2Console) -> None:
    """Record that ``guest`` (L1) runs the L2 whose console is ``l2``."""
    _L2[guest] = l2


def l2_of(guest: Guest) -> L2Console | None:
    return _L2.get(guest)
