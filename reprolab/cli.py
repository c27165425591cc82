"""The ``reprolab`` command line: a thin layer over the library.

Each subcommand lives in its own module under :mod:`reprolab.commands`; this module only
wires them up and turns reprolab's error families into one-line messages and exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from reprolab import __version__
from reprolab.commands import COMMANDS
from reprolab.errors import EXIT_CODES, ExitContext, Family, InfraError, UserError, exit_code

#: Exit codes (from :data:`reprolab.errors.EXIT_CODES`): 2 for input the user must fix, 3
#: for the host or the harness failing.
EXIT_USER = EXIT_CODES[Family.USER][ExitContext.CLI]
EXIT_INFRA = EXIT_CODES[Family.INFRASTRUCTURE][ExitContext.CLI]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprolab", description="Reproduce Linux kernel and KVM faults on demand."
    )
    parser.add_argument("--version", action="version", version=f"reprolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"reprolab.commands.{name}").register(sub)
    return parser


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C. The commands reprolab runs are in process groups of their
    own (reprolab.proc), so the terminal's SIGINT reaches only reprolab: unwinding is what
    ends them (a build's make and compilers, a bisection's steps) and removes their work
    directories and git worktrees; dying on the spot would leave all of that running."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" goes to pytest as it is (`reprolab run ... -- -x`); splitting it
    # off first lets options follow the paths (`run testcases --attempts 3`).
    passthrough: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, passthrough = words[:cut], words[cut + 1:]
    args = parser.parse_args(words)
    if passthrough:
        if not hasattr(args, "pytest_args"):
            parser.error(f"arguments after -- are only for `reprolab run`: {passthrough}")
        args.pytest_args = passthrough
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"reprolab: error: {exc}", file=sys.stderr)
        return exit_code(exc, ExitContext.CLI)
    except InfraError as exc:
        print(f"reprolab: infrastructure error: {exc}", file=sys.stderr)
        return exit_code(exc, ExitContext.CLI)
    except KeyboardInterrupt as exc:
        print("reprolab: interrupted", file=sys.stderr)
        return exit_code(exc, ExitContext.CLI)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
