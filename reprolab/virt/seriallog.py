"""libvirt's copy of the serial console (virtlogd's file), brought into the artifacts whole.

virtlogd rotates a log at ``max_size`` (2 MiB by default), keeping ``max_backups`` pieces
(``serial.log.0`` newest .. ``serial.log.N`` oldest) and deleting older ones; a virtlogd
killed or restarted mid-run stops or restarts the file. The pieces are joined oldest first
into one ``serial.log`` (none is left behind in scratch), and whenever the result holds
fewer bytes than the console reader saw, a note says so: ``console.log`` is the complete
record, ``serial.log`` a second witness that may have gaps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from reprolab.virt.hostfiles import HostFiles

#: More than any virtlogd.conf max_backups in use; missing pieces are simply skipped.
MAX_PIECES = 16


def collect_serial(files: HostFiles, serial: Path, dest: Path, *, console_bytes: int
                   ) -> list[str]:
    """Join ``serial`` and its rotated pieces into ``dest``; return notes for the result."""
    notes: list[str] = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    pieces: list[Path] = []
    for i in reversed(range(MAX_PIECES)):
        part = dest.with_name(f"{dest.name}.piece{i}")
        if files.fetch(Path(f"{serial}.{i}"), part):
            pieces.append(part)
        else:
            part.unlink(missing_ok=True)  # a failed SFTP get leaves an empty file
    current = dest.with_name(f"{dest.name}.current")
    if files.fetch(serial, current):
        pieces.append(current)
    else:
        current.unlink(missing_ok=True)
    if not pieces:
        return ["serial.log: virtlogd left no copy of the console"]
    try:
        with dest.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    except OSError as exc:
        notes.append(f"serial.log: could not join virtlogd's pieces: {exc}")
    finally:
        for piece in pieces:
            piece.unlink(missing_ok=True)
    if len(pieces) > 1:
        notes.append(f"serial.log: joined {len(pieces)} pieces virtlogd rotated")
    size = dest.stat().st_size if dest.exists() else 0
    if size < console_bytes:
        notes.append(
            f"serial.log truncated: libvirt's copy holds {size} of the {console_bytes} "
            "console bytes (virtlogd rotated pieces away, or was restarted); console.log "
            "is complete")
    return notes
