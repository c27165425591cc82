"""The guest's serial console as a unix socket QEMU listens on, on this host.

Local guests get one (see :func:`reprolab.virt.domain_xml.render_domain_xml`): the harness
connects to it straight away, with no ``virsh console`` process in between, and QEMU takes
a socket's reader at once where it notices a pty's only at a once-a-second poll. Guests on
a lab host keep a pty: the socket would be on that host.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import termios
import time
import tty
from pathlib import Path

from reprolab.errors import InfraError

#: sun_path holds 108 bytes with its NUL; a longer scratch path keeps the pty instead.
MAX_PATH_BYTES = 100
#: Ctrl-]: what ``virsh console`` leaves on, so a user's hands need not learn another key.
ESCAPE = b"\x1d"


def usable_path(path: Path) -> Path | None:
    """``path`` when a unix socket can be bound there, else None (the caller keeps a pty)."""
    return path if len(os.fsencode(path)) <= MAX_PATH_BYTES else None


def connect(path: Path, timeout: float) -> socket.socket:
    """Connect to the console socket, waiting up to ``timeout`` for it to appear (libvirt
    creates it as QEMU starts; a paused domain's exists already)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            sock.close()
            if time.monotonic() >= deadline:
                raise InfraError(f"could not connect to the console socket {path}: "
                                 f"{exc.strerror or exc}") from exc
            time.sleep(0.02)
            continue
        return sock


def bridge(path: Path) -> int:
    """Hand the console to the user's terminal until Ctrl-] or until the guest's QEMU goes:
    ``reprolab shell``'s interactive mode for a socket console (``virsh console`` reads only
    ptys). The terminal is raw meanwhile, so the guest's shell sees every key."""
    fd_in = sys.stdin.fileno()
    fd_out = sys.stdout.fileno()
    sock = connect(path, timeout=5.0)
    saved = None
    if os.isatty(fd_in):
        saved = termios.tcgetattr(fd_in)
        tty.setraw(fd_in)
    try:
        while True:
            ready, _, _ = select.select([fd_in, sock], [], [])
            if sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    return 0  # QEMU closed it: the guest is gone
                os.write(fd_out, data)
            if fd_in in ready:
                keys = os.read(fd_in, 1 << 12)
                if not keys:
                    return 0
                head, escaped, _ = keys.partition(ESCAPE)
                if head:
                    sock.sendall(head)
                if escaped:
                    return 0
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        sock.close()
