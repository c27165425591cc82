"""The guest's serial console, read live under pexpect: straight from the unix socket QEMU
listens on for a guest on this host (:mod:`reprolab.console_socket`), through ``virsh
console`` for one on a lab host.

Everything the guest prints passes through :meth:`Console.pump`, which appends it to the
attempt's ``console.log`` and hands it to every observer (the crash detector), so there is
one reader and one ordering of bytes. The console is attached while the domain is still
paused: a pty or a socket drops what it prints while nobody reads it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import signal
import socket as _socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pexpect
import pexpect.fdpexpect

from reprolab import console_socket
from reprolab.errors import GuestDied, InfraError
from reprolab.proc import CommandResult

Observer = Callable[[bytes], None]

#: How much decoded console text is kept in memory for pattern waits; the file keeps all.
_WINDOW = 4 << 20


def _end(child: pexpect.spawn) -> None:
    """Stop ``virsh console`` at once and reap it.

    pexpect's own close sleeps 0.1 s after closing the pty and then walks SIGHUP, SIGCONT,
    SIGINT with 0.1 s pauses: on every attempt's critical path, for a reader that holds
    nothing worth a clean exit (the log is written by :meth:`Console.pump`, libvirt drops
    the stream with the connection).
    """
    if child.isalive():
        with contextlib.suppress(OSError):
            child.kill(signal.SIGKILL)
        with contextlib.suppress(Exception):
            child.wait()
    child.ptyproc.delayafterclose = 0.0
    child.close(force=True)


class ConsoleTimeout(InfraError):
    """A wait on the console ran out; carries the console tail for the report."""


class Console:
    def __init__(self, uri: str, domain: str, log_path: Path, *, socket: Path | None = None
                 ) -> None:
        self.uri = uri
        self.domain = domain
        self.log_path = log_path
        #: The domain's console socket (on this host); None: ``virsh console`` reads its pty.
        self.socket = socket
        self._child: pexpect.spawn | pexpect.fdpexpect.fdspawn | None = None
        self._sock: _socket.socket | None = None
        self._log: BinaryIO | None = None
        self._observers: list[Observer] = []
        self._text = ""
        self._dropped = 0  # characters cut from the front of _text
        self.bytes_seen = 0
        self.last_output = time.monotonic()
        self.eof = False
        #: Polled by waits: a non-None answer (say, "the guest panicked") ends them early.
        self.stop_check: Callable[[], str | None] | None = None
        #: Asked once when a wait finds the stream closed: what became of the guest (QEMU
        #: gone, and why, or still running with only the stream cut), for the error.
        self.closed_reason: Callable[[], str] | None = None
        self._synced = False
        #: Bytes the log could not take yet (a full disk): kept and retried, never dropped.
        self._unwritten = bytearray()
        #: The first write error, for the attempt's notes.
        self.write_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def attach(self, timeout: float = 15.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab", buffering=0)
        if self.socket is not None:
            try:
                self._sock = console_socket.connect(self.socket, timeout)
            except InfraError as exc:
                raise InfraError(f"could not attach to the console of {self.domain}: {exc}"
                                 ) from exc
            self._child = pexpect.fdpexpect.fdspawn(self._sock, timeout=timeout, use_poll=True)
            self.last_output = time.monotonic()
            return
        argv = ["-c", self.uri, "console", self.domain, "--force"]
        child = pexpect.spawn("virsh", argv, timeout=timeout, echo=False)
        self._child = child
        try:
            child.expect(r"Escape character is.*\n", timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            said = (child.before or b"").decode(errors="replace").strip()
            raise InfraError(
                f"could not attach to the console of {self.domain}: {said or 'no answer'}"
            ) from exc
        self.last_output = time.monotonic()

    def move_log(self, path: Path) -> None:
        """Log on into ``path`` (after what it holds), with what was logged here so far: a
        console attached before its attempt had a directory, to a guest restored ahead."""
        if self._log is not None:
            self._log.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        with (path.open("ab") as sink, contextlib.suppress(FileNotFoundError),
              self.log_path.open("rb") as src):
            shutil.copyfileobj(src, sink)
        self.log_path.unlink(missing_ok=True)
        self.log_path = path
        if self._log is not None:
            self._log = path.open("ab", buffering=0)

    def close(self) -> None:
        if self._child is not None:
            with contextlib.suppress(InfraError):
                self.pump(0.0)
            if self._sock is not None:
                self._sock.close()  # the fd fdspawn reads: nothing of its own to end
                self._sock = None
            else:
                assert isinstance(self._child, pexpect.spawn)
                _end(self._child)
            self._child = None
        if self._log is not None:
            if self._unwritten:
                self._write_log(b"")
            self._log.close()
            self._log = None

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    # -- reading ---------------------------------------------------------------------------
    def pump(self, timeout: float) -> bytes:
        """Read what arrives within ``timeout`` seconds; feed the log and the observers."""
        if self._child is None or self.eof:
            if timeout:
                time.sleep(timeout)
            return b""
        try:
            data: bytes = self._child.read_nonblocking(size=1 << 16, timeout=timeout)
        except pexpect.TIMEOUT:
            return b""
        except (pexpect.EOF, ConnectionError):
            # A socket's peer gone (QEMU exited) reads as a reset as well as an EOF.
            self.eof = True
            return b""
        if data:
            self._record(data)
        # Drain whatever else is already buffered without waiting.
        while True:
            try:
                more: bytes = self._child.read_nonblocking(size=1 << 16, timeout=0)
            except (pexpect.TIMEOUT, pexpect.EOF, ConnectionError):
                break
            if not more:
                break
            self._record(more)
            data += more
        return data

    def _write_log(self, data: bytes) -> None:
        """Append to console.log; on a full disk keep the bytes and retry on the next write."""
        assert self._log is not None
        self._unwritten += data
        try:
            while self._unwritten:
                n = self._log.write(self._unwritten)
                del self._unwritten[: n or 0]
                if not n:
                    break
        except OSError as exc:
            if self.write_error is None:
                self.write_error = f"console.log write failed ({exc}); bytes kept in memory"

    def _record(self, data: bytes) -> None:
        self.bytes_seen += len(data)
        self.last_output = time.monotonic()
        if self._log is not None:
            self._write_log(data)
        self._text += data.decode(errors="replace")
        if len(self._text) > _WINDOW:
            cut = len(self._text) - _WINDOW // 2
            self._text = self._text[cut:]
            self._dropped += cut
        for observer in self._observers:
            observer(data)

    @property
    def position(self) -> int:
        """Absolute character offset of the end of what has been read so far."""
        return self._dropped + len(self._text)

    def silence(self) -> float:
        return time.monotonic() - self.last_output

    def recent(self, chars: int) -> str:
        """The last ``chars`` characters read: a cheap look at the end, unlike :meth:`tail`."""
        return self._text[-chars:]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self._text.replace("\r", "").splitlines()[-lines:])

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        *,
        since: int | None = None,
        stop: Callable[[], str | None] | None = None,
    ) -> re.Match[str]:
        """Wait until ``pattern`` appears in the output read after ``since``.

        ``stop`` is polled between reads; a non-None answer ends the wait early with a
        :class:`ConsoleTimeout` carrying that reason (the domain died, a crash was seen).
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        stop = stop if stop is not None else self.stop_check
        start = self.position if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            offset = max(0, start - self._dropped)
            m = rx.search(self._text, offset)
            if m:
                return m
            if stop is not None:
                reason = stop()
                if reason:
                    raise ConsoleTimeout(reason, detail=self.tail())
            if self.eof:
                why = f"; {self.closed_reason()}" if self.closed_reason is not None else ""
                raise GuestDied(
                    f"console of {self.domain} closed while waiting for {rx.pattern!r}{why}",
                    detail=self.tail(),
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConsoleTimeout(
                    f"{rx.pattern!r} did not appear on the console of {self.domain} "
                    f"within {timeout:.0f} s",
                    detail=self.tail(),
                )
            self.pump(min(0.25, left))

    # -- writing ---------------------------------------------------------------------------
    def send(self, line: str) -> None:
        """Type ``line`` into the console shell (once it is known to be listening)."""
        if not self._synced:
            self.sync_shell()
        self._write(line)

    def _write(self, line: str) -> None:
        if self._child is None:
            raise GuestDied(f"console of {self.domain} is not attached")
        try:
            self._child.send(line.rstrip("\n") + "\n")
        except ConnectionError as exc:
            self.eof = True  # the socket's QEMU is gone: the waits say what became of it
            raise GuestDied(f"console of {self.domain} closed: {exc}") from exc

    def assume_synced(self) -> None:
        """The shell is known to read input without a probe: a guest restored from a state
        saved after :meth:`sync_shell` answered runs that same shell at that same prompt, and
        an image whose console shell printed the ready marker itself holds the tty already
        (a line typed after the marker waits in its input buffer for the shell)."""
        self._synced = True

    def sync_shell(self, timeout: float = 30.0) -> None:
        """Wait until the console shell really reads input.

        Right after boot (or after the shell respawns) init and getty flush the tty, so a
        command typed blind can vanish. Probe with an arithmetic echo whose answer never
        appears in the echoed input, until the shell answers.
        """
        token = secrets.token_hex(3)
        deadline = time.monotonic() + timeout
        while True:
            since = self.position
            self._write(f"echo P$((6*7)){token}")
            try:
                self.wait_for(f"P42{token}", min(2.0, max(0.1, deadline - time.monotonic())),
                              since=since)
                self._synced = True
                return
            except ConsoleTimeout:
                if time.monotonic() >= deadline:
                    raise

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        """Run ``command`` in the shell the guest's init leaves on the console.

        The second path into a guest whose network is gone. The markers are printed with
        printf so the echoed command line never matches them; kernel messages printed
        meanwhile land in the output, since the console is also the kernel's.
        """
        start = time.monotonic()
        deadline = start + timeout  # one deadline for the shell sync and the command
        if not self._synced:
            self.sync_shell(timeout)
        token = secrets.token_hex(4)
        since = self.position
        self.send(
            f"printf '%s%s\\n' __RLS_ {token}; {command}; "
            f"printf '%s%s %d\\n' __RLE_ {token} $?"
        )
        # The start marker's newline is not required: a kernel line printed right after
        # it (a restored guest's clocksource switch did) comes first, and is output too.
        m = self.wait_for(
            re.compile(rf"__RLS_{token}(?:\r?\n)?(?P<out>.*?)__RLE_{token} (?P<rc>\d+)", re.S),
            max(0.0, deadline - time.monotonic()),
            since=since,
        )
        out = m.group("out").replace("\r\n", "\n")
        # stdout and stderr arrive merged on the console: all of it is stdout.
        return CommandResult(int(m.group("rc")), out, "", time.monotonic() - start, command)
