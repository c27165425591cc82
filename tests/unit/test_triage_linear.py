"""Parsing stays linear in the input, whatever a guest prints (issue 16 item 1).

No clocks here: the work is counted as the Python lines the triage code executes (a
deterministic operation counter) for 1x and 8x the same hostile input, and the regexes only
ever see capped lines and bounded report windows, which is asserted directly.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from reprolab.detect import logfile
from reprolab.detect.extract import MAX_STARTS, anchored_search
from reprolab.detect.lines import LINE_CAP, console_lines, iter_console_lines
from reprolab.detect.parser import ConsoleParser
from reprolab.detect.report import parse_log
from reprolab.detect.rules import compile_rule

TRIAGE = str(Path(__file__).resolve().parents[2] / "reprolab" / "triage")


def operations(fn: Callable[[], object]) -> int:
    """Python lines executed inside reprolab.triage while ``fn`` runs."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(TRIAGE):
            return None

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            nonlocal count
            if event == "line":
                count += 1
            return local

        return local

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


HOSTILE: dict[str, Callable[[int], bytes]] = {
    # The reproductions: one long line of a header word, with and without a stamp.
    "warning-line": lambda n: b"[ 1.0] " + b"WARNING: " * (2000 * n) + b"\n",
    "bug-line": lambda n: b"BUG: " * (4000 * n) + b"\n",
    "still-has-locks": lambda n: b"[ 1.0] " + b"BUG: x still has locks held" * (800 * n) + b"\n",
    "ubsan": lambda n: b"[ 1.0] UBSAN: " + b"a" * (20000 * n) + b"\n",
    # Many report lines of a rule that needs a later line which never comes.
    "held-lock-lines": lambda n: b"[ 1.0] BUG: held lock freed!\n" * (300 * n),
    "task-lines": lambda n: b"[ 1.0] INFO: task " * (3000 * n) + b"\n",
    "no-newline": lambda n: b"x" * (40000 * n),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_whole_log_parse_is_linear(name: str) -> None:
    small, big = HOSTILE[name](1), HOSTILE[name](8)
    ops1 = operations(lambda: parse_log(small))
    ops8 = operations(lambda: parse_log(big))
    assert ops8 <= 12 * max(ops1, 1), (ops1, ops8)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_streaming_parse_is_linear_and_matches_chunking(name: str) -> None:
    def stream(data: bytes, chunk: int) -> list[tuple[str, int]]:
        p = ConsoleParser()
        out = []
        for pos in range(0, len(data), chunk):
            out += p.feed(data[pos : pos + chunk])
        out += p.close()
        return [(e.kind, e.offset) for e in out]

    small, big = HOSTILE[name](1), HOSTILE[name](8)
    ops1 = operations(lambda: stream(small, 4096))
    ops8 = operations(lambda: stream(big, 4096))
    assert ops8 <= 12 * max(ops1, 1), (ops1, ops8)
    # The same line cap applies whatever the chunking: same events for any block size.
    assert stream(big, 4096) == stream(big, 1 << 20) == stream(big, 333)


def test_every_line_the_rules_see_is_capped() -> None:
    text = "a" * (5 * LINE_CAP + 3) + "\n" + "\x00b" * 3000
    lines = console_lines(text)
    assert max(map(len, lines)) <= LINE_CAP
    assert "".join(lines[:6]) == "a" * (5 * LINE_CAP + 3)
    streamed = list(iter_console_lines([text.encode()[i : i + 777]
                                        for i in range(0, len(text), 777)]))
    assert max(map(len, streamed)) <= LINE_CAP
    assert streamed[:6] == lines[:6]


def test_title_rules_start_only_at_a_bounded_number_of_headers() -> None:
    tries = 0

    class Counting:
        def match(self, text: str, pos: int) -> None:
            nonlocal tries
            tries += 1

    text = ("BUG: x " * 100 + "\n") * 100
    anchored_search(Counting(), text, "BUG:")  # type: ignore[arg-type]
    assert tries == MAX_STARTS
    rule = compile_rule("BUG: .*still has locks held!")
    assert anchored_search(rule, "foo BUG: a BUG: b still has locks held!", "BUG:") is not None


def test_big_file_in_bounded_memory(tmp_path: Path) -> None:
    """A log of any size costs the same memory: only windows around markers are kept."""
    boot = b"".join(b"[%6d.000000] usb 1-1: new device number %d\n" % (i, i) for i in range(20000))
    crash = (b"[ 9999.000000] Kernel panic - not syncing: sysrq triggered crash\n"
             b"[ 9999.000001] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0 #1\n")
    peaks = []
    for copies in (2, 16):
        path = tmp_path / f"big{copies}.log"
        with path.open("wb") as fh:
            for _ in range(copies):
                fh.write(boot)
            fh.write(crash)
            fh.write(boot)
        tracemalloc.start()
        rep = logfile.parse_file(path, whole_limit=0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert rep is not None and rep.title == "kernel panic: sysrq triggered crash"
        whole = parse_log(path.read_bytes())
        assert whole is not None and (whole.title, whole.kind, whole.cpu) == (
            rep.title, rep.kind, rep.cpu)
    # 8x the file, not 8x the memory (a whole read would need > 8x).
    assert peaks[1] < 1.5 * peaks[0], peaks


@pytest.mark.parametrize("chunk", [512, 4096, 1 << 20])
def test_reduced_log_titles_like_the_whole_log(chunk: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows around markers, cut at any chunk size, give the whole log's answer."""
    monkeypatch.setattr(logfile, "CHUNK", chunk)
    data = Path(__file__).resolve().parents[1] / "data"
    filler = b"".join(b"[%6d.000000] eth0: link up %d\n" % (i, i) for i in range(3000))
    for log in sorted((data / "field").glob("*.log")) + sorted((data / "console").glob("*.log")):
        path = tmp_path / log.name
        path.write_bytes(filler + log.read_bytes() + filler)
        whole, reduced = parse_log(path.read_bytes()), logfile.parse_file(path, whole_limit=0)
        if whole is None:
            assert reduced is None, log.name
            continue
        assert reduced is not None, log.name
        assert (reduced.title, reduced.kind, reduced.stuck_in, reduced.fatal_title) == (
            whole.title, whole.kind, whole.stuck_in, whole.fatal_title), log.name


def test_every_marker_has_a_trigger() -> None:
    """The big-file reader finds candidate lines by short triggers: none may be missed."""
    assert all(any(t.decode() in m for t in logfile._TRIGGERS) for m in logfile._MARKERS)
