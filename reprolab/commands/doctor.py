"""``reprolab doctor``: one line per check, non-zero exit when no run could start."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reprolab.doctor import run_checks
from reprolab.paths import default_artifacts
from reprolab.virt import DEFAULT_URI


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check that this host can run reproductions, and how")
    p.add_argument("--uri", default=DEFAULT_URI, help="libvirt URI (default %(default)s)")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="where vmcores go (default ./artifacts)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    checks = run_checks(args.uri, args.artifacts or default_artifacts())
    for check in checks:
        print(check.line())
    return 1 if any(c.status == "fail" for c in checks) else 0
