"""Streaming console detector: bytes in as they arrive, events out as soon as a line completes.

The harness must react to a crash while the guest is still there to be dumped, so the
detector cannot wait for the log to end: it looks at each line once, the moment its newline
arrives. To keep up with floods it scans whole received blocks with one bytes regex of all
crash markers and only decodes the few lines that carry one. It never raises on input: any
byte sequence is a valid (if odd) console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reprolab.detect import kinds
from reprolab.detect.lines import LINE_CAP, normalise
from reprolab.detect.oopses import LINUX_OOPSES

#: A line longer than this is cut and its remainder treated as a new line: a flood without
#: newlines must not grow memory without bound, and the work per line stays bounded. The same
#: cap as the whole-log parser's (:data:`reprolab.detect.lines.LINE_CAP`), so chunked and
#: whole input see the same lines.
MAX_LINE = LINE_CAP
_PRINTK_TIME = re.compile(rb"(?m)^(?:<[0-9]{1,3}>)?\[ *[0-9]+\.[0-9]+\]")
_REBOOT_HEADER = "Booting the kernel."
#: kernel_restart()'s line: an orderly reboot (someone ran reboot), which panic() and a
#: reset never print. The boot after it is expected, not an unexpected reboot.
ORDERLY_RESTART = "reboot: Restarting system"

_MARKERS = sorted(
    {o.header for o in LINUX_OOPSES}
    | {"Oops", "clocksource", "Linux version ", "mount root fs", "No working init",
       "Requested init", "Failed to execute", ORDERLY_RESTART},
    key=len,
    reverse=True,
)
_MARKER_RE = re.compile(b"|".join(re.escape(m.encode()) for m in _MARKERS))
_CALLER = re.compile(r"^\[ *[0-9]+\.[0-9]+\]\[ *([CT])([0-9]+)\]")
_CPU_IN_LINE = re.compile(r"CPU#(\d+)|on cpu (\d+)|\bon CPU (\d+)|\bCPU: (\d+) ")
_BOOT_BANNER = re.compile(r"(?:^|\] )Linux version [0-9]")


@dataclass(frozen=True)
class Event:
    """A crash marker seen on the console.

    ``kind`` is one of :data:`reprolab.detect.kinds.ALL_KINDS`; ``offset`` is the byte offset
    of the line's start in the stream; ``caller`` is the printk caller id ("T123"/"C1") when
    the kernel prints one, which is how interleaved CPUs are told apart.
    """

    kind: str
    line: str
    offset: int
    cpu: int | None
    fatal: bool
    caller: str | None = None


def _decode(raw: bytes) -> str:
    return normalise(raw.decode("utf-8", errors="replace").replace("\r", "")).rstrip()


def _cpu_of(line: str, caller: str | None) -> int | None:
    m = _CPU_IN_LINE.search(line)
    if m is not None:
        return int(next(g for g in m.groups() if g is not None))
    if caller is not None and caller.startswith("C"):
        return int(caller[1:])
    return None


class ConsoleParser:
    """Feed console bytes in any chunking; get each event once, when its line completes."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._pending_offset = 0
        self._banners = 0
        self._closed = False
        self._kernel_seen = False
        self._restarting = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Events completed by this chunk (possibly none)."""
        if not chunk or self._closed:
            return []
        self._pending += chunk
        last_nl = self._pending.rfind(b"\n")
        events: list[Event] = []
        if last_nl >= 0:
            block = bytes(self._pending[: last_nl + 1])
            del self._pending[: last_nl + 1]
            events += self._scan(block, self._pending_offset)
            self._pending_offset += len(block)
        while len(self._pending) > MAX_LINE:
            block = bytes(self._pending[:MAX_LINE])
            del self._pending[:MAX_LINE]
            events += self._scan(block + b"\n", self._pending_offset)
            self._pending_offset += MAX_LINE
        return events

    def close(self) -> list[Event]:
        """Flush a trailing partial line (the console often ends mid-line when a guest dies)."""
        if self._closed:
            return []
        self._closed = True
        block = bytes(self._pending)
        self._pending.clear()
        return self._scan(block + b"\n", self._pending_offset) if block else []

    @property
    def offset(self) -> int:
        """Bytes consumed into complete lines so far."""
        return self._pending_offset

    def _scan(self, block: bytes, base: int) -> list[Event]:
        events: list[Event] = []
        seen_line = -1
        for m in _MARKER_RE.finditer(block):
            line_start = block.rfind(b"\n", 0, m.start()) + 1
            # Pieces of MAX_LINE bytes, as feed() cuts a line that has no newline yet.
            start = line_start + (m.start() - line_start) // MAX_LINE * MAX_LINE
            if start == seen_line:
                continue  # one event per line: the first marker decides
            seen_line = start
            end = min(block.find(b"\n", m.start()), start + MAX_LINE)
            if not self._kernel_seen and _PRINTK_TIME.search(block, 0, start) is not None:
                self._kernel_seen = True
            event = self._line_event(_decode(block[start:end]), base + start)
            if event is not None:
                events.append(event)
        if not self._kernel_seen and _PRINTK_TIME.search(block) is not None:
            self._kernel_seen = True
        return events

    def _line_event(self, line: str, offset: int) -> Event | None:
        cm = _CALLER.match(line)
        caller = f"{cm.group(1)}{cm.group(2)}" if cm else None
        if ORDERLY_RESTART in line:
            self._restarting = True
            return None
        if _BOOT_BANNER.search(line):
            self._kernel_seen = True
            self._banners += 1
            if self._banners < 2:
                return None
            # Seen, but not a failure when the kernel restarted on request.
            expected, self._restarting = self._restarting, False
            return Event(kinds.REBOOT, line, offset, None, not expected, caller)
        if "---[ end " in line:
            return None  # the trailer of a report already announced ("---[ end Kernel panic")
        if _REBOOT_HEADER in line and not self._kernel_seen:
            return None  # the decompressor's line of the first boot, not a reboot
        if not any(o.matches(line) for o in LINUX_OOPSES) and not kinds.extra_marker(line):
            return None
        kind, fatal = kinds.classify(line)
        if kind == kinds.REBOOT and self._restarting:
            fatal = False  # the decompressor of a boot that was asked for
        return Event(kind, line, offset, _cpu_of(line, caller), fatal, caller)
