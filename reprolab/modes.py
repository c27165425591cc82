"""File modes for what QEMU must read but other local users must not.

A guest image holds the guest's SSH host private key (the harness pins its public half), so
anyone who can read the initrd or disk can impersonate the guest. QEMU runs as
``libvirt-qemu``: image files are ``0640`` and their directory ``0750``, both in group
``libvirt-qemu``, which QEMU reads through whether or not libvirt relabels the files (its
DAC driver, with ``dynamic_ownership``, chowns them to ``libvirt-qemu`` for the run and
back afterwards). Without that group (not a Debian libvirt) the files are ``0600`` in a
``0711`` directory and libvirt's relabelling is what lets QEMU in.
"""

from __future__ import annotations

import grp
import os
from pathlib import Path

QEMU_GROUP = "libvirt-qemu"


def qemu_gid() -> int | None:
    try:
        return grp.getgrnam(QEMU_GROUP).gr_gid
    except KeyError:
        return None


def qemu_only(path: Path) -> None:
    """``path`` (a file or directory) readable by QEMU's group and root, nobody else.

    The owner is kept: a file libvirt relabelled for a running guest stays QEMU's.
    """
    gid = qemu_gid()
    is_dir = path.is_dir()
    if gid is None:
        path.chmod(0o711 if is_dir else 0o600)
        return
    os.chown(path, -1, gid)
    path.chmod(0o750 if is_dir else 0o640)


def private_like(path: Path, model: Path) -> None:
    """Give ``path`` no wider permissions than ``model`` (a dossier written from a vmcore:
    it holds the guest's kernel log and memory contents)."""
    path.chmod(model.stat().st_mode & 0o666)
