"""``reprolab triage``: title crashes in console logs, or write a dossier from a vmcore.

Logs are read as bytes, in bounded memory whatever their size, and odd content never makes
the command fail: a log without a crash is an answer ("crashed": false), not an error. A log
that cannot be read is one line on stderr (and an "error" object in JSON) while the other logs
are still triaged; the exit status is then 2, as for any input to fix. One JSON object per
log, in order, so scripts can zip the output with their inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reprolab.detect.logfile import parse_file
from reprolab.detect.report import CrashReport, no_crash_json
from reprolab.errors import UserError

#: Same code as a user error (reprolab.cli.EXIT_USER): a log to fix. Not imported from the
#: CLI module, which imports this one.
_EXIT_USER = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "triage",
        help="title crashes in console logs, or triage a vmcore",
        description="Find the first crash in each console LOG and print its title, kind and "
        "report; with --vmcore, write a dossier (report.json + report.md) from a kernel dump.",
    )
    parser.add_argument("logs", nargs="*", metavar="LOG", type=Path, help="console log files")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--questionable-frames", action="store_true",
                        help='count "? func" frames when a report has no other (kernels built '
                        "with CONFIG_UNWINDER_GUESS print every frame that way)")
    parser.add_argument("--vmcore", type=Path, help="kernel dump to triage (ELF or kdump)")
    parser.add_argument("--vmlinux", type=Path, help="vmlinux with debug info for --vmcore")
    parser.add_argument("--out", type=Path, help="dossier directory (default: next to the dump)")
    parser.add_argument("--elf", type=Path, default=None,
                        help="keep the ELF a kdump --vmcore is converted to at ELF (for drgn "
                        "or crash); without --vmlinux the vmlinux is found by build id in "
                        "the kernel cache and /usr/lib/debug/boot")
    parser.set_defaults(func=run)


def _text(path: Path, rep: CrashReport | None) -> str:
    if rep is None:
        return f"{path}: no crash\n"
    head = [
        f"{path}: {rep.title}",
        f"  kind: {rep.kind}   signature: {rep.signature.key}"
        + ("   (corrupted: " + rep.corrupted_reason + ")" if rep.corrupted else ""),
    ]
    if rep.cpu is not None or rep.task:
        head.append(f"  cpu: {rep.cpu}   task: {rep.task}")
    if rep.stuck_in:
        head.append(f"  stuck in: {rep.stuck_in}")
    if rep.fatal_title and rep.fatal_title != rep.title:
        head.append(f"  fatal: {rep.fatal_title}   (kind: {rep.fatal_kind})")
    if rep.alt_titles:
        head.append("  also: " + "; ".join(rep.alt_titles))
    body = "\n".join("    " + ln for ln in rep.report.rstrip("\n").splitlines()[:60])
    return "\n".join(head) + "\n" + body + "\n\n"


def run(args: argparse.Namespace) -> int:
    if args.vmcore is None and (args.vmlinux is not None or args.elf is not None):
        raise UserError("--vmlinux and --elf need --vmcore")
    if args.vmcore is None and not args.logs:
        raise UserError("give console LOG files, or --vmcore DUMP")
    console: CrashReport | None = None
    failed = 0
    for path in args.logs:
        try:
            rep = parse_file(path, questionable_frames=args.questionable_frames)
        except UserError as exc:
            failed += 1
            print(f"reprolab: error: {exc}", file=sys.stderr)
            if args.format == "json":
                sys.stdout.write(json.dumps({"log": str(path), "error": str(exc)}) + "\n")
            continue
        console = console or rep
        if args.format == "json":
            obj: dict[str, Any] = rep.to_json() if rep else no_crash_json()
            sys.stdout.write(json.dumps({**obj, "log": str(path)}) + "\n")
        else:
            sys.stdout.write(_text(path, rep))
    if args.vmcore is not None:
        from reprolab.triage.vmcore import write_dossier

        out = args.out or args.vmcore.with_name(args.vmcore.name + ".triage")
        path = write_dossier(args.vmcore, args.vmlinux, out, console_report=console,
                             keep_elf=args.elf)
        if args.format == "json":
            # One line, like the per-log objects: the output stays JSON Lines.
            sys.stdout.write(json.dumps(json.loads(path.read_text())) + "\n")
        else:
            sys.stdout.write((out / "report.md").read_text())
            print(f"dossier: {path} and {out / 'report.md'}", file=sys.stderr)
    return _EXIT_USER if failed else 0
