"""An attempt's console logs made readable once the attempt is over.

During the attempt ``console.log`` is the raw byte stream the harness read (tail it live).
Afterwards it becomes the text form: terminal escape sequences (the shell's ``ESC[6n``
cursor queries, colours) stripped, CRLF made LF, and the harness's own shell probes marked
with :data:`HARNESS_MARK` so nobody takes them for the test's commands. The raw bytes stay
in ``console.raw``, which triage read and which a parser fix can re-read.

``serial.log`` is virtlogd's copy of the same serial port. When it is byte-identical to the
raw console stream it says nothing new and is removed; when it differs it is kept and the
difference is named (usually bytes the guest wrote before the console attached, or after
it was closed), because then it is evidence.
"""

from __future__ import annotations

import re
from pathlib import Path

RAW = "console.raw"
HARNESS_MARK = "[reprolab harness] "

_ESCAPES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI: ESC [ ... final byte (ESC[6n, colours)
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: ESC ] ... BEL or ST
    rb"|\x1b[@-Z\\-_]"                   # two-byte escapes
)
#: What :class:`reprolab.console.Console` types and what the shell answers to it: the
#: readiness probe ``echo P$((6*7))<hex>`` / ``P42<hex>`` and run()'s ``__RLS_``/``__RLE_``
#: markers (the command between them is the test's and stays unmarked).
_PROBES = re.compile(r"echo P\$\(\(6\*7\)\)[0-9a-f]{6}|^P42[0-9a-f]{6}$|__RL[SE]_[0-9a-f]{8}")


def clean_text(raw: bytes) -> str:
    """The text form of a raw console stream."""
    text = _ESCAPES.sub(b"", raw).decode(errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    return "\n".join(HARNESS_MARK + ln if _PROBES.search(ln) else ln for ln in lines)


def tidy_attempt_logs(directory: Path) -> list[str]:
    """Rewrite ``console.log`` as text (raw kept), drop a duplicate ``serial.log``.

    Returns notes for the attempt's result. Idempotent: a second call changes nothing.
    """
    notes: list[str] = []
    log = directory / "console.log"
    raw_path = directory / RAW
    if not log.is_file():
        return notes
    if not raw_path.exists():
        raw = log.read_bytes()
        raw_path.write_bytes(raw)
        log.write_text(clean_text(raw))
    else:
        raw = raw_path.read_bytes()
    serial = directory / "serial.log"
    if serial.is_file():
        other = serial.read_bytes()
        if other == raw:
            serial.unlink()
        else:
            notes.append("serial.log kept: " + _difference(raw, other))
    return notes


def _difference(console: bytes, serial: bytes) -> str:
    if serial.endswith(console):
        return (f"virtlogd's copy has {len(serial) - len(console)} bytes before what the "
                "console read (written before the console attached)")
    if serial.startswith(console):
        return (f"virtlogd's copy has {len(serial) - len(console)} bytes after what the "
                "console read (written after the console closed)")
    if console.startswith(serial):
        return (f"virtlogd's copy is {len(console) - len(serial)} bytes shorter than the "
                "console (it was not flushed when fetched)")
    common = next((i for i, (a, b) in enumerate(zip(console, serial, strict=False))
                   if a != b), min(len(console), len(serial)))
    return (f"virtlogd's copy ({len(serial)} bytes) and the console ({len(console)} bytes) "
            f"differ from byte {common}")
