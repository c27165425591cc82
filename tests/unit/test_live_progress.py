"""Progress lines from the core's typed phase events."""

from __future__ import annotations

import io
from pathlib import Path

from reprolab.commands.live import LiveProgress, PlainProgress, show_progress
from reprolab.progress import Phase, ProgressEvent, emit


def _events(d: Path) -> list[ProgressEvent]:
    case = "testcases/test_x.py::test_x"
    return [
        ProgressEvent(case, 1, Phase.BUILDING, d, at=100.0),
        ProgressEvent(case, 1, Phase.BOOTING, d, at=101.0),
        ProgressEvent(case, 1, Phase.RUNNING, d, at=110.0),
        ProgressEvent(case, 1, Phase.EVENT, d, ("panic",), detail="panic", at=112.0),
        ProgressEvent(case, 1, Phase.CRASHED, d, ("panic",), detail="panic", at=112.5),
        ProgressEvent(case, 1, Phase.DUMPING, d, ("panic",), at=113.0),
        ProgressEvent(case, 1, Phase.TRIAGING, d, ("panic", "pvpanic"), at=115.0),
        ProgressEvent(case, 1, Phase.DONE, d, ("panic", "pvpanic"), detail="reproduced",
                      at=120.0),
    ]


def test_plain_lines_name_the_directory_and_every_phase(tmp_path: Path) -> None:
    out = io.StringIO()
    with show_progress(out, tty=False):
        for ev in _events(tmp_path):
            emit(ev)
    emit(_events(tmp_path)[0])  # unsubscribed after the block
    lines = [ln.split("] ", 1)[1] for ln in out.getvalue().splitlines()]
    assert lines == [
        f"test_x #1: started; attempt dir {tmp_path}",
        f"test_x #1: booting; live console {tmp_path / 'console.log'}",
        "test_x #1: running at 10 s",
        "test_x #1: event panic (1 so far) at 12 s",
        "test_x #1: crashed (panic) at 12 s",
        "test_x #1: dumping at 13 s",
        "test_x #1: triaging at 15 s",
        "test_x #1: done in 20 s: reproduced",
    ]


def test_live_rows_follow_the_running_attempts(tmp_path: Path) -> None:
    from rich.console import Console

    out = io.StringIO()
    live = LiveProgress(Console(file=out, force_terminal=True, width=200))
    evs = _events(tmp_path)
    for ev in evs[:4]:
        live(ev)
    table = live._render()
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    row = console.file.getvalue()  # type: ignore[attr-defined]
    assert "test_x #1" in row and "running" in row and "1 events: panic" in row
    for ev in evs[4:]:
        live(ev)
    assert not live._running  # the finished attempt left the display
    printed = out.getvalue()
    assert f"attempt dir {tmp_path}" in printed and "reproduced after 20 s" in printed


def test_a_failing_display_never_fails_the_attempt(tmp_path: Path) -> None:
    def broken(_ev: ProgressEvent) -> None:
        raise RuntimeError("display gone")

    from reprolab.progress import subscribed

    with subscribed(broken):
        emit(_events(tmp_path)[0])
    assert PlainProgress  # the plain renderer is the non-terminal default
