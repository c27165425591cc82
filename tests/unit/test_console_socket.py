"""The console over a unix socket, as QEMU serves it: a real listening socket stands in for
QEMU's chardev, and the real :class:`Console` reads, types and logs through it."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from reprolab import console_socket
from reprolab.console import Console
from reprolab.errors import GuestDied, InfraError


class _FakeQemu:
    """Listens like QEMU's socket chardev; echoes typed lines the way a shell at a prompt
    would, answering ``printf`` marker lines with their markers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.conn: socket.socket | None = None
        self.typed = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.sendall(b"[    0.000000] Linux version 6.1.0\r\nREPROLAB-READY\r\n# ")
        while True:
            data = self.conn.recv(4096)
            if not data:
                return
            self.typed += data
            while b"\n" in self.typed:
                line, _, self.typed = self.typed.partition(b"\n")
                # printf '%s%s\n' __RLS_ TOKEN; CMD; printf '%s%s %d\n' __RLE_ TOKEN $?
                token = line.split(b"__RLS_ ")[1].split(b";")[0]
                self.conn.sendall(line + b"\r\n__RLS_" + token + b"\r\nhello\r\n__RLE_"
                                  + token + b" 3\r\n# ")

    def hang_up(self) -> None:
        assert self.conn is not None
        self.conn.shutdown(socket.SHUT_RDWR)  # as QEMU's exit does (its reader thread waits)
        self.conn.close()
        self.server.close()


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[_FakeQemu]:
    fake = _FakeQemu(tmp_path / "c.sock")
    yield fake
    fake.server.close()


def test_console_reads_types_and_logs_through_the_socket(qemu: _FakeQemu, tmp_path: Path
                                                         ) -> None:
    console = Console("qemu:///system", "rl-x", tmp_path / "console.log", socket=qemu.path)
    console.attach(timeout=5)
    console.wait_for("REPROLAB-READY", 5)
    console.assume_synced()
    result = console.run("echo hello; false", timeout=5)
    assert (result.rc, result.stdout) == (3, "hello\n")
    console.close()
    logged = (tmp_path / "console.log").read_bytes()
    assert logged.startswith(b"[    0.000000] Linux version") and b"__RLE_" in logged


def test_qemu_gone_is_the_guest_dying_not_a_timeout(qemu: _FakeQemu, tmp_path: Path) -> None:
    console = Console("qemu:///system", "rl-x", tmp_path / "console.log", socket=qemu.path)
    console.attach(timeout=5)
    console.wait_for("REPROLAB-READY", 5)
    qemu.hang_up()
    with pytest.raises(GuestDied, match="console of rl-x closed"):
        console.wait_for("never printed", 5)
    console.close()


def test_no_socket_is_a_one_line_infrastructure_error(tmp_path: Path) -> None:
    console = Console("qemu:///system", "rl-x", tmp_path / "console.log",
                      socket=tmp_path / "absent.sock")
    with pytest.raises(InfraError, match=r"could not attach to the console of rl-x: could "
                                         r"not connect to the console socket .*absent\.sock"):
        console.attach(timeout=0.2)


def test_a_path_too_long_for_a_socket_keeps_the_pty() -> None:
    short = Path("/var/lib/reprolab/run/session-0123abcd/0123abcd.console.sock")
    assert console_socket.usable_path(short) == short
    assert console_socket.usable_path(Path("/var/lib/" + "x" * 100 + ".sock")) is None


BRIDGE = """
import sys
from pathlib import Path
from reprolab.console_socket import bridge
sys.exit(bridge(Path(sys.argv[1])))
"""


def test_bridge_hands_the_console_to_a_terminal_until_ctrl_bracket(qemu: _FakeQemu,
                                                                     tmp_path: Path) -> None:
    """``reprolab shell``'s interactive console for a socket: keys go to the guest raw,
    its output comes back, Ctrl-] leaves with status 0 and the terminal restored."""
    child = pexpect.spawn(sys.executable, ["-c", BRIDGE, str(qemu.path)], timeout=10,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    child.expect("REPROLAB-READY")
    child.send("echo hi; printf '%s%s\\n' __RLS_ k1; true\n")  # answered like a shell
    child.expect("hello")
    child.sendcontrol("]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
