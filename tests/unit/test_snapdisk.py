"""Which disks a snapshot freezes with the saved RAM, and the pristine copy it restores."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from lxml import etree

from reprolab.run import snapdisk
from reprolab.virt.domain_xml import render_domain_xml
from reprolab.virt.machine import GuestSpec


def test_writable_overlay_is_found_in_the_rendered_domain() -> None:
    spec = GuestSpec(kernel=Path("/k"), initrd=Path("/i"), disk=Path("/run/x/ov.qcow2"))
    assert snapdisk.disk_sources(render_domain_xml(spec, name="n")) == (Path("/run/x/ov.qcow2"),)
    assert snapdisk.disk_sources(render_domain_xml(
        GuestSpec(kernel=Path("/k"), initrd=Path("/i")), name="n")) == ()


def test_readonly_and_cdrom_disks_are_not_frozen() -> None:
    spec = GuestSpec(kernel=Path("/k"), initrd=Path("/i"), disk=Path("/ov.qcow2"))
    root = etree.fromstring(render_domain_xml(spec, name="n").encode())
    devices = root.find("devices")
    assert devices is not None
    for device, extra in (("cdrom", None), ("disk", "readonly"), ("disk", "shareable")):
        disk = etree.SubElement(devices, "disk", type="file", device=device)
        etree.SubElement(disk, "source", file=f"/other-{device}-{extra}")
        if extra:
            etree.SubElement(disk, extra)
    assert snapdisk.disk_sources(etree.tostring(root).decode()) == (Path("/ov.qcow2"),)


def test_each_thaw_is_a_fresh_copy_of_the_frozen_disk(tmp_path: Path) -> None:
    overlay, frozen = tmp_path / "ov.qcow2", tmp_path / "frozen.qcow2"
    overlay.write_bytes(b"saved state")
    snapdisk.freeze(overlay, frozen)
    assert not overlay.exists() and frozen.stat().st_mode & 0o777 == 0o600
    for _ in range(2):
        snapdisk.thaw(frozen, overlay)
        assert overlay.read_bytes() == b"saved state"
        st = overlay.stat()
        assert st.st_uid == pwd.getpwnam("libvirt-qemu").pw_uid and st.st_mode & 0o777 == 0o660
        overlay.write_bytes(b"what the attempt wrote")
    assert frozen.read_bytes() == b"saved state"
    assert sorted(os.listdir(tmp_path)) == ["frozen.qcow2", "ov.qcow2"]
