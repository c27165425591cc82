"""The disk half of a snapshot: a guest's qcow2 overlay frozen with its saved RAM.

A restored RAM image only makes sense on the disk it was saved with: the guest's page
cache, its ext4 journal position and systemd's open files all describe that disk. So at
save time the overlay is taken out of the guest's path (a rename: no copy, and nothing
writes it any more once ``virDomainSave`` has returned, because QEMU drains and flushes its
block devices when the migration to the save file completes and then exits), and before
every restore a fresh copy of it is put back where the saved XML expects it. Each attempt
then starts from the same disk state, whatever the one before wrote, and the cached base
image under the overlay is never written at all.

The frozen copy is only read by this process (root); the copy QEMU opens is owned by
libvirt-qemu like any other overlay, in the session's run directory under
/var/lib/reprolab.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from lxml import etree

from reprolab.errors import InfraError


def disk_sources(xml: str) -> tuple[Path, ...]:
    """Files the domain writes as disks (read-only and shared disks are left alone)."""
    root = etree.fromstring(xml.encode())
    found: list[Path] = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("type") != "file" or disk.get("device", "disk") != "disk":
            continue
        if disk.find("readonly") is not None or disk.find("shareable") is not None:
            continue
        source = disk.find("source")
        if source is not None and source.get("file"):
            found.append(Path(str(source.get("file"))))
    return tuple(found)


def freeze(overlay: Path, frozen: Path) -> None:
    """Keep ``overlay`` as it was when the guest was saved (the guest is gone by now)."""
    try:
        os.replace(overlay, frozen)
        frozen.chmod(0o600)
    except OSError as exc:
        raise InfraError(f"could not keep the saved guest's disk {overlay}: {exc}") from exc


def thaw(frozen: Path, overlay: Path) -> None:
    """A pristine copy of ``frozen`` at ``overlay``, writable by QEMU.

    Written beside the target and renamed over it, so a guest that still had the old file
    open (it should be destroyed by now) never sees a half-written disk.
    """
    tmp = overlay.with_name(overlay.name + ".thaw")
    try:
        user = pwd.getpwnam("libvirt-qemu")
    except KeyError as exc:
        raise InfraError("user libvirt-qemu missing: is libvirt installed?") from exc
    try:
        shutil.copyfile(frozen, tmp)  # no metadata: libvirt's ownership xattrs stay behind
        os.chown(tmp, user.pw_uid, user.pw_gid)
        tmp.chmod(0o660)
        os.replace(tmp, overlay)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InfraError(f"could not restore the saved guest's disk to {overlay}: {exc}"
                         ) from exc
