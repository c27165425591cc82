"""``reprolab run``: the main job — run test cases and print the verdicts as a table.

It is pytest underneath (the test cases are pytest files and the plugin does the work);
this command only picks the artifact tree and prints what the run concluded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from reprolab.paths import default_artifacts, new_run_id
from reprolab.results import read_results


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run test cases (default: testcases/) and print their verdicts")
    p.add_argument("paths", nargs="*", default=["testcases"], help="test files or directories")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="artifact tree (default ./artifacts/run-<time>)")
    p.add_argument("--uri", default=None, help="libvirt URI (default qemu:///system)")
    p.add_argument("--kernel", default=None, help="kernel spec overriding every case's")
    p.add_argument("--attempts", type=int, default=None, help="attempts per case")
    p.add_argument("--mode", choices=["regression", "reproduce"], default=None)
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER,
                   help="after --: arguments passed to pytest as they are")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import pytest

    artifacts = (args.artifacts or default_artifacts() / new_run_id()).resolve()
    argv = [*args.paths, "-p", "no:cacheprovider", f"--reprolab-artifacts={artifacts}",
            f"--junitxml={artifacts / 'junit.xml'}", "-o", "junit_family=xunit1"]
    for flag, value in (("uri", args.uri), ("kernel", args.kernel),
                        ("attempts", args.attempts), ("mode", args.mode)):
        if value is not None:
            argv.append(f"--reprolab-{flag}={value}")
    if args.keyword:
        argv += ["-k", args.keyword]
    argv += [a for a in args.pytest_args if a != "--"]
    os.environ.setdefault("REPROLAB_RUN_ID", artifacts.name)
    code = int(pytest.main(argv))
    print_table(artifacts)
    print_skipped(artifacts / "junit.xml")
    return code


def skipped_cases(junit: Path) -> list[tuple[str, str]]:
    """(test case, what it needs) for every case the run skipped, from pytest's junit XML."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None:
            continue
        reason = skipped.get("message") or (skipped.text or "").strip() or "skipped"
        out.append((case.get("name") or "?", reason.removeprefix("Skipped: ")))
    return out


def print_skipped(junit: Path) -> None:
    """One line per skipped case saying what it needs, so a skip is never silent."""
    for name, reason in skipped_cases(junit):
        print(f"skipped {name}: {reason}")


def print_table(artifacts: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = read_results(artifacts)
    table = Table(title=f"reprolab verdicts ({artifacts})", show_lines=False)
    for col in ("test case", "verdict", "title", "attempts", "events", "first hit",
                "vmcore"):
        table.add_column(col, overflow="fold")
    for row in rows:
        verdict = row["verdict"]
        style = {"reproduced": "bold green", "infra-error": "bold red"}.get(verdict, "yellow")
        first = row.get("time_to_first_hit")
        table.add_row(
            row["case"].split("::")[-1],
            f"[{style}]{verdict}[/]",
            row.get("title") or "-",
            f"{row['hits']}/{row['attempts']}",
            ",".join(row.get("events") or []) or "-",
            f"{first:.0f} s" if first else "-",
            _relative(row.get("vmcore"), artifacts),
        )
    # Logs and CI capture are not terminals: rich would squeeze the table into 80 columns.
    width = None if sys.stdout.isatty() else 220
    Console(file=sys.stdout, width=width).print(table)


def _relative(path: str | None, root: Path) -> str:
    if not path:
        return "-"
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
