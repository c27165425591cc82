"""``reprolab build-kernel SPEC``: build (or find in the cache) the kernel a spec names.

Useful before a test run to warm the cache, and in CI to prove a tree, series and config
build. Prints where the artifacts are; the exit code follows the error families (and 125
for an untestable commit with ``--bisect``, as ``git bisect run`` wants).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from reprolab.errors import UntestableError
from reprolab.kernel.resolve import resolve_kernel
from reprolab.kernel.spec import parse_kernel_spec

#: ``git bisect run``'s "skip this commit".
EXIT_UNTESTABLE = 125


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


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C: make's process group is ended and the workspace and any
    git worktree are removed on the way out, instead of dying with all of that left behind."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    spec = parse_kernel_spec(args.spec)
    try:
        with _terminate_as_interrupt(), console.status(f"kernel {spec}") as status:

            def progress(msg: str) -> None:
                # A spinner on a terminal; in CI logs, the stages only, not every file.
                if console.is_terminal:
                    status.update(f"kernel: {msg}")
                elif not msg.startswith("compiling:"):
                    console.print(f"kernel: {msg}", markup=False, highlight=False)

            kernel = resolve_kernel(
                spec, artifacts_dir=args.artifacts, progress=progress, bisecting=args.bisect
            )
    except UntestableError as exc:
        console.print(f"reprolab: untestable: {exc}", markup=False, highlight=False)
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
