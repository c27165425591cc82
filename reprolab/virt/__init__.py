"""libvirt access: connections, domains, dumps.

This module itself imports no libvirt: the names a case spec or the pytest plugin need
(the default URI, the dump formats) are here, so reading a marker never loads libvirt.
"""

from __future__ import annotations

from typing import Literal

#: The local system daemon: what a run uses unless told otherwise.
DEFAULT_URI = "qemu:///system"

DumpFormat = Literal["elf", "kdump-zlib"]
DUMP_FORMATS: tuple[DumpFormat, ...] = ("kdump-zlib", "elf")
DEFAULT_FORMAT: DumpFormat = "kdump-zlib"
