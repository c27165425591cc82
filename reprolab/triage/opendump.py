"""The exact commands that open a dump, for the end of every dossier.

drgn reads QEMU's ELF dumps and the ELF that :mod:`reprolab.triage.kdump` converts kdump
files into; it is offered for every dump. ``crash`` is offered only for kernels the installed
crash was tested on: Debian 12's crash 8.0.2 opens a stock 6.1 dump but stops on 6.12 with
"invalid structure member offset: kmem_cache_s_num" (its slab code predates 6.x's changes),
so printing its command for a 6.12 dump would only send people into that error.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

from reprolab.proc import run

#: Newest kernel (major, minor) each crash version was seen to open here, by hand, on real
#: dumps of this project (see docs/writing-cases.md, "Opening a dump"): 8.0.2 opened stock
#: 6.1.0-57 ELF and flattened kdump-zlib dumps; on 6.12.117 it fails even with
#: --no_kmem_cache (bt and ps break).
CRASH_TESTED: dict[str, tuple[int, int]] = {"8.0.2": (6, 1)}


def drgn_binary() -> str:
    """drgn from reprolab's own environment if it is there (the one tested), else PATH's."""
    local = Path(sys.executable).parent / "drgn"
    if local.is_file():
        return str(local)
    return shutil.which("drgn") or "drgn"


@cache
def crash_version() -> str | None:
    if shutil.which("crash") is None:
        return None
    done = run(["crash", "--version"], check=False, timeout=30)
    m = re.search(r"crash (\d+\.\d+\.\d+)", done.stdout)
    return m.group(1) if m else None


def _kernel_version(release: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def crash_support(release: str | None, version: str | None) -> tuple[bool, str]:
    """Whether crash ``version`` opens dumps of kernel ``release``, and why (not)."""
    if version is None:
        return False, "crash is not installed"
    kernel = _kernel_version(release)
    newest = CRASH_TESTED.get(version)
    if kernel is None or newest is None:
        return False, f"crash {version} is untested on {release or 'this kernel'}"
    if kernel > newest:
        return False, (f"crash {version} cannot open {release} dumps (tested: it stops with "
                       "\"invalid structure member offset: kmem_cache_s_num\" on 6.12); "
                       "use drgn")
    return True, f"crash {version} opens {release} dumps (tested)"


def open_commands(dump: Path, fmt: str, vmlinux: Path | None, release: str | None,
                  converted: Path | None = None) -> dict[str, Any]:
    """What report.json's ``open_with`` holds: the commands, in order, and notes.

    A kdump file is opened through its ELF conversion: ``converted`` when it was kept,
    else the command that writes it next to the dump comes first.
    """
    q = shlex.quote
    commands: list[str] = []
    core = dump
    if fmt != "elf":
        core = converted or dump.with_name(dump.name + ".elf")
        if converted is None or not converted.exists():
            commands.append(f"reprolab triage --vmcore {q(str(dump))} --elf {q(str(core))}")
    sym = f" -s {q(str(vmlinux))}" if vmlinux else ""
    commands.append(f"{drgn_binary()} -c {q(str(core))}{sym}")
    notes = []
    if vmlinux is None:
        notes.append("no vmlinux with this dump's build ID was found: drgn and crash need one "
                     "for symbols (reprolab's built kernels keep theirs in the kernel cache; "
                     "for the stock kernel install linux-image-<release>-dbg)")
    ok, why = crash_support(release, crash_version())
    if ok and vmlinux is not None:
        # crash reads QEMU's kdump files itself, flattened or not (tested with 8.0.2).
        commands.append(f"crash {q(str(vmlinux))} {q(str(dump))}")
    notes.append(why)
    return {"commands": commands, "notes": notes}


def render(open_with: dict[str, Any]) -> list[str]:
    lines = ["", "## Open the dump", "", "```sh"]
    lines.extend(open_with.get("commands", []))
    lines.append("```")
    lines.extend(f"- {n}" for n in open_with.get("notes", []))
    return lines
