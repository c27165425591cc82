"""Memory-only guest dumps through libvirt.

ELF is the default format: it opens in drgn (when the guest published vmcoreinfo through
fw_cfg) and in ``crash``. QEMU's kdump-zlib is smaller and opens in ``crash`` only, so it is
an option, not the default. Memory-only dumps need no guest cooperation, so they work on a
wedged or panicked guest, which is the point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import libvirt

from reprolab.errors import InfraError

DumpFormat = Literal["elf", "kdump-zlib"]

_FORMATS = {
    "elf": libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW,
    "kdump-zlib": libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_KDUMP_ZLIB,
}


@dataclass(frozen=True)
class Vmcore:
    path: Path
    format: DumpFormat
    size: int
    seconds: float


def take_vmcore(dom: Any, path: Path, fmt: DumpFormat = "elf") -> Vmcore:
    """Write a memory-only dump of ``dom`` to ``path`` and return what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        dom.coreDumpWithFormat(str(path), _FORMATS[fmt], libvirt.VIR_DUMP_MEMORY_ONLY)
    except libvirt.libvirtError as exc:
        first = str(exc).splitlines()[0]
        raise InfraError(f"memory-only dump to {path} failed: {first}") from exc
    seconds = time.monotonic() - start
    return Vmcore(path=path, format=fmt, size=path.stat().st_size, seconds=seconds)
