"""Where a kernel's debug info is, found by build ID, and how to get it when it is missing.

A dump names its kernel by the GNU build ID in VMCOREINFO. Any vmlinux with the same build
ID is the right one, wherever it came from: reprolab's kernel cache (every built kernel
keeps its vmlinux there) or Debian's ``linux-image-<release>-dbg`` package under
/usr/lib/debug/boot. A vmlinux found by name or release alone could be a rebuild with other
addresses, so nothing here matches on anything but the build ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reprolab.paths import cache_root
from reprolab.proc import run

DEBUG_BOOT = Path("/usr/lib/debug/boot")


def candidate_vmlinuxes(extra: Iterable[Path] = ()) -> Iterator[Path]:
    """Every vmlinux reprolab knows of: given ones, the kernel cache, Debian's -dbg files."""
    yield from extra
    kernels = cache_root() / "kernels"
    if kernels.is_dir():
        yield from sorted(kernels.glob("*/vmlinux"))
    if DEBUG_BOOT.is_dir():
        yield from sorted(DEBUG_BOOT.glob("vmlinux-*"))


def find_vmlinux(build_id: str | None, extra: Iterable[Path] = ()) -> Path | None:
    """The vmlinux whose build ID is ``build_id`` (a dump's VMCOREINFO BUILD-ID), or None.

    VMCOREINFO may carry a shorter prefix of the ID than the note holds, so a prefix match
    of at least 20 hex digits (80 bits) counts.
    """
    from reprolab.kernel.elf import elf_build_id

    if not build_id or len(build_id) < 20:
        return None
    want = build_id.lower()
    for path in candidate_vmlinuxes(extra):
        have = elf_build_id(path)
        if have and (have.startswith(want) or want.startswith(have)):
            return path
    return None


@dataclass(frozen=True)
class StockDebugInfo:
    release: str
    path: Path
    present: bool
    package: str
    #: How to get it (the apt-get line and its size), or "" when present.
    advice: str


def _apt_sizes(package: str) -> tuple[int, int] | None:
    """(download bytes, installed bytes) from apt's cache, or None when apt does not know."""
    done = run(["apt-cache", "show", "--no-all-versions", package], check=False, timeout=60)
    if not done.ok:
        return None
    size = installed = None
    for line in done.stdout.splitlines():
        if line.startswith("Size:"):
            size = int(line.split()[1])
        elif line.startswith("Installed-Size:"):
            installed = int(line.split()[1]) * 1024
    if size is None or installed is None:
        return None
    return size, installed


def stock_debug_info(release: str, *, sizes: bool = True) -> StockDebugInfo:
    """Whether the stock kernel's vmlinux with debug info is installed, and if not how."""
    package = f"linux-image-{release}-dbg"
    path = DEBUG_BOOT / f"vmlinux-{release}"
    if path.is_file():
        return StockDebugInfo(release, path, True, package, "")
    advice = f"apt-get install {package}"
    known = _apt_sizes(package) if sizes else None
    if known is not None:
        advice += (f" ({known[0] / 1e6:.0f} MB download, {known[1] / 1e9:.1f} GB installed; "
                   "dossiers then have symbolised stacks, D-state tasks and runqueues)")
    elif sizes:
        advice += " (apt does not know it: add the debian-debug archive, "\
                  "deb http://deb.debian.org/debian-debug bookworm-debug main)"
    return StockDebugInfo(release, path, False, package, advice)
