"""Console lines as they come from real machines, brought to the shape the kernel printed.

A field log is rarely a clean serial capture: it is syslog or the journal (a date, a host and
``kernel:`` before every line), ``dmesg -T`` (a wall-clock date instead of the printk
timestamp), /dev/kmsg or extended netconsole records (``6,1234,5678,-;msg``), an IPMI SOL or
netconsole capture with terminal escapes, NULs and carriage returns, or lines cut short by a
reboot. The crash rules are written against the kernel's own line format, so every line is
normalised first, the same way for the streaming detector and the whole-log parser.

Every line is also capped at :data:`LINE_CAP` characters, everywhere, before any regex sees it:
printk never emits a longer line (its record limit is 1024 bytes), and the cap is what bounds
the work per line, so parsing stays linear in the input whatever a guest prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

#: printk's record limit is 1024 bytes; with a syslog prefix and the caller id a real kernel
#: line stays well below this. Anything longer is garbage or a user program's output.
LINE_CAP = 2048

_ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*+[ -/]*+[@-~]|[()][0-9A-Za-z]|[78=>c])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]++")  # not \r: handled apart
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
#: ``Nov 30 12:00:01 host kernel: ``, OpenWrt's ``Thu Sep  1 19:19:48 2022 kern.warn kernel: ``,
#: RFC 3339 stamps (``2026-11-30T12:00:01.123+00:00 host kernel: ``).
_SYSLOG = re.compile(
    rf"^(?:<\d{{1,3}}>)?(?:(?:{_WDAY} )?{_MONTH} {{1,2}}\d{{1,2}} \d\d:\d\d:\d\d(?:\.\d+)?"
    r"(?: \d{4})?|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?:(?P<host>[^\s:]++) )?(?:(?:kern|user|daemon|syslog)\.\w+ )?"
    r"(?P<prog>[A-Za-z0-9_./@-]++)(?:\[\d+\])?: ?"
)
#: ``dmesg -T``: ``[Mon Nov 30 12:00:01 2026] ``.
_DMESG_T = re.compile(rf"^\[{_WDAY} {_MONTH} {{1,2}}\d{{1,2}} \d\d:\d\d:\d\d \d{{4}}\] ?")
#: /dev/kmsg and extended netconsole: ``level,seq,usec,flags[,more];message``.
_KMSG = re.compile(r"^(\d{1,3}),\d{1,20},(\d{1,20}),[^;]{0,40};")
_INDENTED = re.compile(r"[ \t]++(?:kernel: ?)?(?=(?:<\d{1,3}>)?\[ {0,12}\d+\.\d+\])")
#: A line cut by a reboot: the new kernel's first line starts in the middle of the old one.
_REBOOT_CUT = re.compile(r"(?<=\S)(?=\[ {0,4}0\.000000\](?:\[ *[CT]\d+\])? )")


_STAMP_START = frozenset(" 0123456789")


def cap(line: str) -> list[str]:
    """``line`` cut into :data:`LINE_CAP` pieces (the remainder treated as new lines)."""
    if len(line) <= LINE_CAP:
        return [line]
    return [line[i : i + LINE_CAP] for i in range(0, len(line), LINE_CAP)]


def normalise(line: str) -> str:
    """One capped line in the kernel's own shape; a user-space syslog line becomes empty.

    User programs and init systems log ``WARNING:``/``BUG:`` lines of their own; once the
    syslog tag shows they are not the kernel's they must not start a crash report.
    """
    if "\x1b" in line:
        line = _ESCAPES.sub("", line)
    if not line.isprintable():
        line = _CONTROL.sub("", line)
    if "\r" in line:
        # A terminal overwrote the line from its start: what was printed last is what counts.
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    if line[:1] in (" ", "\t"):
        # Pasted into a bug report or a wall message: indentation before the timestamp.
        ind = _INDENTED.match(line)
        if ind is not None:
            line = line[ind.end() :]
    if line[:1] == "[" and line[1:2] in _STAMP_START:
        return line  # a printk timestamp: already the kernel's own shape
    m = _SYSLOG.match(line)
    if m is not None:
        if m.group("prog") != "kernel":
            return ""
        line = line[m.end() :]
    else:
        m = _DMESG_T.match(line)
        if m is not None:
            line = line[m.end() :]
        else:
            k = _KMSG.match(line)
            if k is not None:
                usec = int(k.group(2))
                line = f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {line[k.end():]}"
    return line


def split_reboot_cuts(line: str) -> list[str]:
    """A line cut short by a reboot and the new kernel's first line, as two lines."""
    if "0.000000]" not in line:
        return [line]
    return _REBOOT_CUT.split(line)


def console_lines(text: str) -> list[str]:
    """All lines of a decoded console log, capped and normalised."""
    out: list[str] = []
    for raw in text.split("\n"):
        for piece in cap(raw):
            out.extend(split_reboot_cuts(normalise(piece)))
    return out


def iter_console_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines of a byte stream, capped and normalised, in bounded memory.

    A stream without newlines (``/dev/zero``, a flood) is cut every :data:`LINE_CAP` bytes,
    the same boundaries :func:`cap` draws on a whole log.
    """
    pending = b""
    for chunk in chunks:
        pending += chunk
        start = 0
        while True:
            nl = pending.find(b"\n", start, start + LINE_CAP * 4 + 1)
            if nl < 0:
                if len(pending) - start > LINE_CAP * 4:
                    nl = -1
                else:
                    break
            if nl < 0:
                raw = pending[start : start + LINE_CAP * 4]
                start += LINE_CAP * 4
            else:
                raw = pending[start:nl]
                start = nl + 1
            text = raw.decode("utf-8", errors="replace")
            for piece in cap(text):
                yield from split_reboot_cuts(normalise(piece))
        pending = pending[start:]
    if pending:
        for piece in cap(pending.decode("utf-8", errors="replace")):
            yield from split_reboot_cuts(normalise(piece))
