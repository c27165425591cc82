"""``reprolab build-kernel SPEC``: build (or find in the cache) the kernel a spec names.

Useful before a test run to warm the cache, and in CI to prove a tree, series and config
build. Prints where the artifacts are; the exit code follows the error families (and 125
for an untestable commit with ``--bisect``, as ``git bisect run`` wants).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from reprolab.errors import EXIT_CODES, ExitContext, Family, UntestableError
from reprolab.kernel.resolve import resolve_kernel
from reprolab.kernel.spec import parse_kernel_spec

#: ``git bisect run``'s "skip this commit" (the one table: :data:`reprolab.errors.EXIT_CODES`).
EXIT_UNTESTABLE = EXIT_CODES[Family.KERNEL][ExitContext.BISECT_STEP]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build-kernel",
        help="build a kernel from a spec (cached)",
        description="Build the kernel a spec names, or take it from the cache. Spec syntax: "
        "'stock' or 'build:SOURCE[@COMMIT][+patches=DIR][+config=BASE][+fragment=PATH]...' "
        "(see reprolab.kernel.spec).",
    )
    parser.add_argument("spec", nargs="?", default="build:linux-source-6.12",
                        help="kernel spec (default: %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="directory that receives a copy of the build log")
    parser.add_argument("--bisect", action="store_true",
                        help="treat build failures as an untestable commit (exit 125)")
    parser.add_argument("--json", action="store_true", help="print the artifacts as JSON")
    parser.set_defaults(func=run)


#: Progress messages from the build, by their first word, and the stage each one starts.
_STAGES = {"waiting": "waiting for another build of it", "preparing": "preparing the source",
           "workspace": "preparing the source", "applying": "applying patches",
           "configuring": "configuring", "compiling": "compiling", "installing": "installing",
           "built": "done", "cache": "cache hit"}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@contextlib.contextmanager
def _reporter(console: Console, spec: str) -> Iterator[Callable[[str], None]]:
    """The build's progress: a bar with the stage and an estimate on a terminal; in logs and
    CI, one plain line per stage and one a minute while compiling."""
    from reprolab.kernel.build import typical_build_seconds

    expected, samples = typical_build_seconds()
    basis = f"median of {samples} earlier build(s)" if samples else "a fresh small build"
    start = time.monotonic()
    state: dict[str, Any] = {"stage": "starting", "line": "", "said": start}

    def left() -> str:
        remaining = expected - (time.monotonic() - start)
        return f"~{_minutes(remaining)} left" if remaining > 0 else "longer than usual"

    def note(msg: str) -> str | None:
        stage = _STAGES.get(msg.split(" ", 1)[0].rstrip(":"))
        if stage is None:
            return None
        changed = stage != state["stage"]
        state["stage"] = stage
        state["line"] = msg.split(": ", 1)[1] if msg.startswith("compiling:") else ""
        return stage if changed else None

    terminal = console.is_terminal and not os.environ.get("CI")
    if not terminal:
        console.print(f"kernel {spec}: estimate {_minutes(expected)} ({basis})",
                      markup=False, highlight=False, soft_wrap=True)

        def plain(msg: str) -> None:
            changed = note(msg)
            now = time.monotonic()
            if changed is not None or not msg.startswith("compiling:"):
                console.print(f"kernel: {msg}", markup=False, highlight=False, soft_wrap=True)
                state["said"] = now
            elif now - float(state["said"]) >= 60:
                console.print(f"kernel: compiling, {now - start:.0f} s elapsed, {left()}",
                              markup=False, highlight=False, soft_wrap=True)
                state["said"] = now

        yield plain
        return

    columns = (SpinnerColumn(), TextColumn("[bold]{task.fields[stage]}"), BarColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
               TextColumn("[dim]{task.fields[line]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(spec, total=expected, stage="starting", left=left(), line="")
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                done = min(time.monotonic() - start, expected * 0.99)
                bar.update(task, completed=done, stage=state["stage"], left=left(),
                           line=str(state["line"])[:60])

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        def update(msg: str) -> None:
            note(msg)

        try:
            yield update
        finally:
            stop.set()
            thread.join()
            bar.update(task, completed=expected, stage=state["stage"], left="", line="")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    spec = parse_kernel_spec(args.spec)
    try:
        with _reporter(console, str(spec)) as progress:
            kernel = resolve_kernel(
                spec, artifacts_dir=args.artifacts, progress=progress, bisecting=args.bisect
            )
    except UntestableError as exc:
        console.print(f"reprolab: untestable: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_UNTESTABLE
    info = {
        "spec": str(spec),
        "origin": kernel.origin,
        "release": kernel.release,
        "image": str(kernel.image),
        "vmlinux": str(kernel.vmlinux) if kernel.vmlinux else None,
        "config": str(kernel.config) if kernel.config else None,
        "modules_dir": str(kernel.modules_dir),
        "key": kernel.key,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for name, value in info.items():
            print(f"{name:12} {value}")
    return 0
