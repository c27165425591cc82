"""Live progress for ``reprolab run`` and ``repro``: what each running case is doing now.

On a terminal, one rich line per running case (phase, elapsed time, events so far), with a
permanent line when an attempt starts naming its directory and live ``console.log`` and one
when it ends. Elsewhere (CI logs, pipes) the same facts as plain timestamped lines, one per
phase change, because a redrawn display is noise in a log file.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from reprolab.progress import Phase, ProgressEvent, subscribed


@dataclass
class _Running:
    case: str
    attempt: int
    phase: Phase
    started: float
    events: tuple[str, ...] = ()


def _short(case: str) -> str:
    return case.split("::")[-1]


class PlainProgress:
    """One line per phase change, for output that is not a terminal."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._started: dict[tuple[str, int], float] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        key = (ev.case, ev.attempt)
        start = self._started.setdefault(key, ev.at)
        took = ev.at - start
        name = f"{_short(ev.case)} #{ev.attempt}"
        stamp = time.strftime("%H:%M:%S")
        if ev.phase is Phase.BUILDING:
            line = f"{name}: started; attempt dir {ev.directory}"
        elif ev.phase is Phase.BOOTING:
            line = f"{name}: booting; live console {ev.console_log}"
        elif ev.phase is Phase.EVENT:
            line = f"{name}: event {ev.detail} ({len(ev.events)} so far) at {took:.0f} s"
        elif ev.phase is Phase.DONE:
            self._started.pop(key, None)
            line = f"{name}: done in {took:.0f} s: {ev.detail}"
        else:
            extra = f" ({ev.detail})" if ev.detail else ""
            line = f"{name}: {ev.phase}{extra} at {took:.0f} s"
        self.out.write(f"[{stamp}] {line}\n")
        self.out.flush()


class LiveProgress:
    """A rich Live display with a row per running attempt, redrawn twice a second."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self._running: dict[tuple[str, int], _Running] = {}
        self._lock = threading.Lock()
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=2,
                         transient=True, redirect_stdout=True, redirect_stderr=True)

    def _render(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        with self._lock:
            rows = list(self._running.values())
        for r in rows:
            events = ",".join(r.events[-4:]) or "-"
            table.add_row(f"[bold]{_short(r.case)}[/] #{r.attempt}", f"[cyan]{r.phase}[/]",
                          f"{now - r.started:5.0f} s", f"{len(r.events)} events: {events}")
        return table

    def __call__(self, ev: ProgressEvent) -> None:
        key = (ev.case, ev.attempt)
        with self._lock:
            run = self._running.get(key)
            if run is None:
                run = self._running[key] = _Running(ev.case, ev.attempt, ev.phase, ev.at)
            if ev.phase is not Phase.EVENT:
                run.phase = ev.phase
            run.events = ev.events
            if ev.phase is Phase.DONE:
                del self._running[key]
        name = f"{_short(ev.case)} #{ev.attempt}"
        if ev.phase is Phase.BUILDING:
            self.console.print(f"{name}: attempt dir {ev.directory}", soft_wrap=True,
                               highlight=False)
        elif ev.phase is Phase.BOOTING:
            self.console.print(f"{name}: live console {ev.console_log}", soft_wrap=True,
                               highlight=False)
        elif ev.phase is Phase.DONE:
            self.console.print(f"{name}: {ev.detail} after {ev.at - run.started:.0f} s",
                               highlight=False)


@contextmanager
def show_progress(out: IO[str] | None = None, *, tty: bool | None = None) -> Iterator[None]:
    """Subscribe the right renderer for ``out`` for the duration of the block.

    Without ``out``, progress goes to a duplicate of file descriptor 1 taken now: pytest
    captures fd 1 while a test runs, and progress must reach the terminal exactly then.
    """
    own = None
    if out is None:
        sys.stdout.flush()
        own = out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    try:
        if tty is None:
            tty = out.isatty()
        if not tty:
            with subscribed(PlainProgress(out)):
                yield
            return
        from rich.console import Console

        live = LiveProgress(Console(file=out))
        with live.live, subscribed(live):
            yield
    finally:
        if own is not None:
            own.close()
