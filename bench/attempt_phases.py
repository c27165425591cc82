"""Where a cold sysrq attempt's time goes, step by step, next to the bare QEMU floor.

The attempts bench gives one number per attempt; this one splits the cold attempt into the
steps that a bare ``qemu-system-x86_64`` run does not have (libvirt's start, the console
attach, the shell sync, the settle, the close) and the guest's own time (resume to the ready
marker, the marker to the panic), from the session's progress events and timers around the
harness's own functions. It measures, it changes nothing: each timer calls the function it
wraps.

Run: ``.venv/bin/python bench/attempt_phases.py [--attempts 6]``; writes
bench/results/attempt_phases.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_attempts import run_bare
from rich.console import Console as RichConsole
from rich.table import Table

import reprolab.replay
from reprolab.console import Console
from reprolab.guest.handle import Guest
from reprolab.progress import Phase, ProgressEvent, subscribed
from reprolab.replay import load_testcase
from reprolab.run.session import Session
from reprolab.virt.domain import Domain

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "testcases" / "test_sysrq_panic.py"
RESULTS = ROOT / "bench" / "results" / "attempt_phases.json"

#: The harness functions timed, as (owner, attribute, step name).
TIMED: tuple[tuple[Any, str, str], ...] = (
    (Domain, "start", "libvirt start (paused)"),
    (reprolab.replay, "write_attempt_bundle_safely", "replay bundle"),
    (Console, "attach", "console attach"),
    (Domain, "resume", "resume"),
    (Console, "sync_shell", "shell sync"),
    (Guest, "settle", "settle after the panic"),
    (Guest, "close", "close (console, serial log)"),
)


@contextmanager
def timers(spent: dict[str, float]) -> Iterator[None]:
    """Each TIMED function adds its wall time to ``spent[step]`` while this is open (to a
    step of its own when it ran in a thread that brings the next attempt's guest up)."""
    originals = []
    for owner, attr, step in TIMED:
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def timed(*args: Any, _f: Callable[..., Any] = original, _s: str = step,
                  **kwargs: Any) -> Any:
            t0 = time.monotonic()
            # A step run in another thread is the next guest's, started ahead: off the path.
            step = (_s if threading.current_thread() is threading.main_thread()
                    else f"{_s}, next guest ahead (off the path)")
            try:
                return _f(*args, **kwargs)
            finally:
                spent[step] = spent.get(step, 0.0) + time.monotonic() - t0

        functools.update_wrapper(timed, original)
        if isinstance(owner.__dict__.get(attr), classmethod):
            setattr(owner, attr, classmethod(lambda cls, *a, _t=timed, **k: _t(*a, **k)))
        else:
            setattr(owner, attr, timed)
    try:
        yield
    finally:
        for owner, attr, original in originals:
            if isinstance(owner.__dict__.get(attr), classmethod):
                setattr(owner, attr, classmethod(original.__func__))
            else:
                setattr(owner, attr, original)


def cold_attempts(attempts: int, artifacts: Path) -> list[dict[str, float]]:
    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=attempts + 1, until="all")
    body = loaded.body()
    session = Session(artifacts=artifacts, overlap_teardown=True)
    rows: list[dict[str, float]] = []
    try:
        kernel = session.kernel(case.kernel, artifacts)
        session.image(case.guest.image, kernel)
        for index in range(1, attempts + 1):
            spent = {step: 0.0 for _owner, _attr, step in TIMED}
            phases: dict[Phase, float] = {}

            def seen(event: ProgressEvent, _p: dict[Phase, float] = phases) -> None:
                _p.setdefault(event.phase, event.at)

            with timers(spent), subscribed(seen):
                t0 = time.monotonic()
                result, _ = session.run_attempt(case, index, body)
                total = time.monotonic() - t0
            if not result.hit:
                raise SystemExit(f"attempt {index} did not reproduce: {result.outcome}")
            boot = result.boot_seconds or 0.0
            row = dict(spent)
            row["resume to ready marker (guest)"] = boot
            row["ready to panic seen (body)"] = (phases[Phase.CRASHED]
                                                 - phases[Phase.RUNNING])
            row["verdict (parse, classify, records)"] = (
                phases[Phase.DONE] - phases[Phase.CRASHED]
                - spent["settle after the panic"] - spent["close (console, serial log)"])
            row["attempt"] = total
            rows.append(row)
        session.finish_teardowns()
    finally:
        session.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rl-bench-phases-") as tmp:
        half = max(1, args.attempts // 2)
        bare = run_bare(half, Path(tmp) / "bare", pvh=True)
        rows = cold_attempts(args.attempts, Path(tmp) / "artifacts")
        bare += run_bare(args.attempts - half, Path(tmp) / "bare", pvh=True)
    steps = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "attempt"]
    steps.append("attempt")
    medians = {k: round(statistics.median(r.get(k, 0.0) for r in rows), 3) for k in steps}
    bare_median = round(statistics.median(bare), 3)
    table = Table(title="cold sysrq attempt, step by step (median seconds)")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for k in steps:
        table.add_row(k, f"{medians[k]:.3f}")
    table.add_row("bare QEMU, PVH vmlinux, to the panic", f"{bare_median:.3f}")
    RichConsole().print(table)
    RESULTS.write_text(json.dumps({
        "bench": "attempt_phases", "case": str(CASE.relative_to(ROOT)),
        "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "attempts": args.attempts, "median_seconds": medians,
        "bare_pvh_seconds": [round(b, 3) for b in bare], "bare_pvh_median": bare_median,
        "per_attempt": [{k: round(v, 3) for k, v in r.items()} for r in rows],
    }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
