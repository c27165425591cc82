"""``reprolab results``: look at a past run, compare it with another, retire old vmcores.

``reprolab results`` prints the newest run under ./artifacts (or the RUN named);
``--compare OTHER`` (or ``--compare`` alone: the run before it) adds the nightly diff: new,
gone and still-reproducing signatures with their rates, and the cases whose verdict changed.
``--prune-vmcores N`` deletes the dumps of passing runs except the newest N.

Exit codes: 0; 1 with ``--compare`` when a signature is new (so CI can flag the night).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reprolab.history import (
    Comparison,
    RunSummary,
    compare,
    previous_run,
    prune_vmcores,
    resolve_run,
)
from reprolab.paths import default_artifacts

PREVIOUS = "previous"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "results", help="show a past run's verdicts; --compare another run (the nightly diff)",
        description="Read a run's results.jsonl (default: the newest run under ./artifacts) "
                    "and print its verdicts; with --compare, the signatures that are new, "
                    "gone or still reproducing, with rates.")
    p.add_argument("run", nargs="?", default=None,
                   help="run directory or name under the artifact root (default: newest)")
    p.add_argument("--compare", nargs="?", const=PREVIOUS, default=None, metavar="OTHER_RUN",
                   help="compare with OTHER_RUN (default: the run before RUN)")
    p.add_argument("--root", type=Path, default=None,
                   help="artifact root holding run-* directories (default ./artifacts or "
                        "$REPROLAB_ARTIFACTS)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--prune-vmcores", type=int, default=None, metavar="KEEP",
                   help="delete the vmcores of passing runs under the root except the newest "
                        "KEEP (failing runs keep theirs); then exit")
    p.add_argument("--dry-run", action="store_true", help="with --prune-vmcores: only list")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    root = (args.root or default_artifacts()).resolve()
    if args.prune_vmcores is not None:
        return _prune(root, args.prune_vmcores, args.dry_run, args.format)
    run = resolve_run(args.run, root)
    summary = RunSummary.read(run)
    if args.compare is None:
        if args.format == "json":
            sys.stdout.write(json.dumps({"run": str(run), "passed": summary.passed,
                                         "cases": list(summary.rows)}, indent=2) + "\n")
        else:
            _print_run(summary)
        return 0
    other = previous_run(run) if args.compare == PREVIOUS else resolve_run(args.compare, root)
    diff = compare(summary, RunSummary.read(other))
    if args.format == "json":
        sys.stdout.write(json.dumps(diff.to_json(), indent=2) + "\n")
    else:
        _print_run(summary)
        print()
        _print_diff(diff)
    return 1 if diff.new else 0


def _print_run(summary: RunSummary) -> None:
    print(f"run {summary.path} ({'passed' if summary.passed else 'needs a look'})")
    for row in summary.rows:
        rate = row.get("rate") or f"{row.get('hits', 0)}/{row.get('attempts', 0)}"
        print(f"  {row['verdict']:<15} {rate:<28} {row.get('title') or '-'}  "
              f"[{row['case']}]")
        for sig, count in sorted((row.get("signatures") or {}).items()):
            print(f"      signature {sig}: {count}")


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _print_diff(diff: Comparison) -> None:
    print(f"compared with {diff.other}")
    for label, items in (("new", diff.new), ("gone", diff.gone)):
        print(f"{label}: {len(items)}")
        for s in items:
            print(f"  {s.signature}: {s.hits}/{s.attempts} ({_pct(s.rate)})  [{s.case}]")
    print(f"still reproducing: {len(diff.still)}")
    for now, before in diff.still:
        print(f"  {now.signature}: {now.hits}/{now.attempts} ({_pct(now.rate)}), before "
              f"{before.hits}/{before.attempts} ({_pct(before.rate)})  [{now.case}]")
    if diff.verdicts:
        print("verdict changes:")
        for case, now_v, before_v in diff.verdicts:
            print(f"  {case}: {before_v or 'absent'} -> {now_v or 'absent'}")


def _prune(root: Path, keep: int, dry_run: bool, fmt: str) -> int:
    removed = prune_vmcores(root, keep, dry_run=dry_run)
    total = sum(r.size for r in removed)
    if fmt == "json":
        sys.stdout.write(json.dumps({"removed": [str(r.path) for r in removed],
                                     "bytes": total, "dry_run": dry_run}) + "\n")
        return 0
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        print(f"{verb} {r.path} ({r.size / 1e6:.0f} MB)")
    print(f"{verb} {len(removed)} vmcore(s), {total / 1e6:.0f} MB; kept the newest {keep} "
          f"passing run(s) and every failing run under {root}")
    return 0
