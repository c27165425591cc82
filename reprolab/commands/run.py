"""``reprolab run``: the main job — run test cases and print the verdicts as a table.

It is pytest underneath (the test cases are pytest files and the plugin does the work);
this command picks the artifact tree, shows what each case is doing while it runs, and
prints the run's one verdict summary (the plugin's own summary section is left out). Its
options are the plugin's ``--reprolab-*`` options without the prefix, generated from the
same table, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from reprolab.commands.live import show_progress
from reprolab.paths import default_artifacts, new_run_id
from reprolab.run.record import read_results


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run test cases (default: testcases/) and print their verdicts")
    from reprolab.pytest_plugin import OPTIONS

    p.add_argument("paths", nargs="*", default=["testcases"], help="test files or directories")
    for name, kwargs, help_text in OPTIONS:
        if name == "artifacts":
            p.add_argument("--artifacts", type=Path, default=None,
                           help="artifact tree (default ./artifacts/run-<time>)")
            continue
        opts = {k: v for k, v in kwargs.items() if k != "default"}
        if "action" not in opts and "choices" not in opts:
            opts["metavar"] = name.replace("-", "_").upper()
        p.add_argument(f"--{name}", dest=f"opt_{name.replace('-', '_')}", default=None,
                       help=help_text, **opts)
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    p.epilog = "Arguments after -- are passed to pytest as they are."
    p.set_defaults(pytest_args=[])
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import pytest

    artifacts = (args.artifacts or default_artifacts() / new_run_id()).resolve()
    argv = [*args.paths, "-p", "no:cacheprovider", f"--reprolab-artifacts={artifacts}",
            f"--junitxml={artifacts / 'junit.xml'}", "-o", "junit_family=xunit1"]
    argv += plugin_args(args)
    if args.keyword:
        argv += ["-k", args.keyword]
    # pytest's short summary repeats the verdicts: the table below is the one summary.
    argv += ["-rN"]
    argv += list(args.pytest_args)
    os.environ.setdefault("REPROLAB_RUN_ID", artifacts.name)
    if sys.stdout.isatty():
        # pytest's output then passes through the live display, which would show its
        # colour codes as text.
        argv.insert(0, "--color=no")
    with show_progress():
        code = int(pytest.main(argv, plugins=[_OwnSummary()]))
    print_table(artifacts)
    print_skipped(artifacts / "junit.xml")
    return code


def plugin_args(args: argparse.Namespace) -> list[str]:
    """The ``--reprolab-*`` arguments for the options given to ``reprolab run``."""
    from reprolab.pytest_plugin import OPTIONS

    out = []
    for name, kwargs, _help in OPTIONS:
        if name == "artifacts":
            continue
        value = getattr(args, f"opt_{name.replace('-', '_')}", None)
        if value is None:
            continue
        if kwargs.get("action") == "store_const":
            out.append(f"--reprolab-{name}")
        else:
            out.append(f"--reprolab-{name}={value}")
    return out


class _OwnSummary:
    """Tells the plugin this command prints the verdict summary itself."""

    def pytest_configure(self, config: Any) -> None:
        from reprolab.pytest_plugin import CALLER_SUMMARY

        config.stash[CALLER_SUMMARY] = True
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
    if not rows:
        print(f"no verdicts: no test case ran (artifacts: {artifacts})")
        return
    table = Table(title=f"reprolab verdicts ({artifacts})", show_lines=False,
                  caption=_stop_rules(rows))
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


def _stop_rules(rows: list[dict[str, Any]]) -> str | None:
    """How each case's attempt count came about, when not simply "all N ran"."""
    notes = [f"{row['case'].split('::')[-1]}: {row['stop_rule']}" for row in rows
             if row.get("until") == "first-hit" and row.get("stop_rule")]
    return "; ".join(notes) or ("attempts: all run (until=all)" if rows else None)


def _relative(path: str | None, root: Path) -> str:
    if not path:
        return "-"
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
