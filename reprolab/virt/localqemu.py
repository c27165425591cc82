"""The QEMU process of a domain of this host, found from libvirt's pid file.

libvirt offers no call that names a guest's QEMU process; its pid file does, and the
process's command line (``-name guest=NAME,...``) confirms it is that guest's and not a
recycled pid. Only for domains of this host (a remote domain has no QEMU here by that name:
names carry the run's pid and a random part).
"""

from __future__ import annotations

from pathlib import Path

PID_DIR = Path("/run/libvirt/qemu")


def qemu_pid(name: str) -> int | None:
    """The pid of domain ``name``'s QEMU on this host, or None."""
    try:
        pid = int((PID_DIR / f"{name}.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if f"guest={name},".encode() in cmdline else None
