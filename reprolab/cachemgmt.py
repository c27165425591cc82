"""Keep reprolab's caches within a size or age budget without touching what is in use.

Cache entries are the directories under ``<cache>/kernels`` (built and stock kernels, with
their ``.work`` build trees) and ``<cache>/images`` (initramfs and disk images, and the
downloaded package tarballs). Each is guarded by ``<entry>.lock``, which the builders hold
while they create or read it; pruning takes the same lock without waiting, so an entry being
built or loaded is skipped, never deleted under its user. A guest booting from an entry holds
no lock, so entries named on a running process's command line (QEMU's ``-kernel``,
``-initrd``, ``-drive``) are skipped too. ccache manages its own size (``ccache -M``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from reprolab.errors import UserError
from reprolab.paths import cache_root

SECTIONS = ("kernels", "images")


@dataclass(frozen=True)
class Entry:
    path: Path
    #: Sibling paths that belong to it (``<name>.work`` build trees, failed-build logs).
    extras: tuple[Path, ...]
    size: int
    mtime: float

    @property
    def lock(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")


def _size(path: Path) -> int:
    """Bytes on disk (sparse files count what they use)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_blocks * 512
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_blocks * 512
            except OSError:
                continue
    return total


_EXTRA = re.compile(r"^(?P<base>.+?)(?P<suffix>\.work|\.build-\d+|\.failed\.log|\.tmp)$")


def entries(root: Path | None = None) -> list[Entry]:
    """Every cache entry, oldest first.

    An entry is named by what its lock guards: ``x`` together with ``x.work`` (a kernel's
    build tree), ``x.build-PID`` (an image being built, before ``x`` exists) and failed
    build logs, all under ``x.lock``.
    """
    root = root or cache_root()
    out = []
    for section in SECTIONS:
        base = root / section
        if not base.is_dir():
            continue
        groups: dict[str, list[Path]] = {}
        for path in base.iterdir():
            if path.name.endswith(".lock"):
                continue
            m = _EXTRA.match(path.name)
            groups.setdefault(m.group("base") if m else path.name, []).append(path)
        for name, paths in sorted(groups.items()):
            main = base / name
            extras = tuple(sorted(p for p in paths if p != main))
            present = [p for p in (main, *extras) if p.exists() or p.is_symlink()]
            size = sum(_size(p) for p in present)
            mtime = max(p.lstat().st_mtime for p in present)
            out.append(Entry(main, extras, size, mtime))
    return sorted(out, key=lambda e: e.mtime)


def paths_in_use() -> set[str]:
    """Arguments of running processes that are paths (QEMU's -kernel/-initrd/-drive)."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            for part in arg.decode(errors="replace").split(","):
                value = part.partition("=")[2] if "=" in part else part
                if value.startswith("/"):
                    used.add(value)
    return used


def _used_by_process(entry: Entry, used: set[str]) -> bool:
    prefixes = [str(p) + "/" for p in (entry.path, *entry.extras)]
    return any(u.startswith(pre) for u in used for pre in prefixes)


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[Entry, ...]
    #: (entry, why it was kept although the budget wanted it gone)
    skipped: tuple[tuple[Entry, str], ...]
    total_before: int

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        return int(float(num) * units[unit])
    except ValueError:
        raise UserError(f"size {text!r} is not a size like 10G or 500M") from None


def parse_age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t) * 86400
    except ValueError:
        raise UserError(f"age {text!r} is not an age like 7d or 12h") from None


def prune(*, max_size: int | None = None, max_age: float | None = None,
          root: Path | None = None, dry_run: bool = False, now: float | None = None
          ) -> PruneResult:
    """Remove the oldest entries until the cache is under ``max_size`` bytes, and every
    entry older than ``max_age`` seconds; skip entries that are locked or in use."""
    if max_size is None and max_age is None:
        raise UserError("give a budget: --max-size (e.g. 20G) and/or --max-age (e.g. 14d)")
    now = time.time() if now is None else now
    all_entries = entries(root)
    total = sum(e.size for e in all_entries)
    used = paths_in_use()
    remaining = total
    removed: list[Entry] = []
    skipped: list[tuple[Entry, str]] = []
    for entry in all_entries:  # oldest first
        too_old = max_age is not None and now - entry.mtime > max_age
        too_big = max_size is not None and remaining > max_size
        if not (too_old or too_big):
            continue
        if _used_by_process(entry, used):
            skipped.append((entry, "a running process (a guest?) uses it"))
            continue
        why = _remove_locked(entry, dry_run)
        if why is not None:
            skipped.append((entry, why))
            continue
        removed.append(entry)
        remaining -= entry.size
    return PruneResult(tuple(removed), tuple(skipped), total)


def _remove_locked(entry: Entry, dry_run: bool) -> str | None:
    lock = FileLock(str(entry.lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return f"locked: being built or read ({entry.lock})"
    try:
        if not dry_run:
            for path in (*entry.extras, entry.path):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
    finally:
        lock.release()
    return None


def iter_report(result: PruneResult) -> Iterator[str]:
    for e in result.removed:
        yield f"{e.path} ({e.size / 1e6:.0f} MB)"
