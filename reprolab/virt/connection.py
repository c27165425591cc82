"""Opening libvirt connections with errors a person can act on.

libvirt-python prints every error to stderr through its default handler before raising;
reprolab reports errors itself, so the handler is silenced once, here.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import libvirt

from reprolab.errors import LibvirtUnavailable, UserError
from reprolab.virt import DEFAULT_URI

_KNOWN_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "test")


def _quiet(_ctx: object, _err: object) -> None:
    return None


libvirt.registerErrorHandler(_quiet, None)


def validate_uri(uri: str) -> str:
    scheme = uri.split(":", 1)[0]
    if "://" not in uri or scheme not in _KNOWN_SCHEMES:
        raise UserError(
            f"unknown libvirt URI {uri!r}: use qemu:///system, qemu+ssh://USER@HOST/system "
            "or test:///default"
        )
    return uri


def open_connection(uri: str = DEFAULT_URI) -> Any:
    """Open ``uri`` read-write; an unreachable daemon is an infrastructure error."""
    validate_uri(uri)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "no reason given"
        hint = ""
        if uri.startswith("qemu:///") and ("socket" in msg or "No such file" in msg):
            hint = (" (is libvirtd running? start it with scripts/start-daemons.sh, or "
                    "`virtlogd -d; libvirtd -d`)")
        raise LibvirtUnavailable(f"cannot connect to libvirt at {uri}: {msg}{hint}") from exc


def is_remote(uri: str) -> bool:
    return "+ssh://" in uri or "+tcp://" in uri or "+tls://" in uri


def connection_alive(conn: Any, *, rpc: bool = True) -> bool:
    """Is ``conn`` still up? (``rpc``: ask the daemon too, not only the socket.)

    A daemon hung in its shutdown keeps the socket open and never answers: it is asked
    from a thread, and given up on after a few seconds.
    """
    try:
        if not conn.isAlive():
            return False
    except Exception:
        return False
    if not rpc:
        return True
    answered: list[bool] = []

    def ask() -> None:
        with contextlib.suppress(Exception):
            conn.getLibVersion()
            answered.append(True)

    probe = threading.Thread(target=ask, daemon=True)
    probe.start()
    probe.join(5.0)
    return bool(answered)
