"""``reprolab cache``: how big the caches are, and ``prune`` to a size or age budget.

Entries locked by a build or read, or booted by a running guest, are never removed (see
:mod:`reprolab.cachemgmt`); whatever is removed is rebuilt on demand the next time a case
needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from reprolab.cachemgmt import entries, parse_age, parse_size, prune
from reprolab.paths import cache_root


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "cache", help="list reprolab's caches (kernels, images) or prune them to a budget",
        description="Without an action: list cache entries with size and age. 'prune' "
                    "removes the oldest entries beyond --max-size and those older than "
                    "--max-age, never one that is locked or in use.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    pr = actions.add_parser("prune", help="remove old entries to meet a size or age budget")
    pr.add_argument("--max-size", default=None, help="keep the cache under SIZE (e.g. 20G)")
    pr.add_argument("--max-age", default=None,
                    help="remove entries older than AGE (e.g. 14d, 12h; a bare number: days)")
    pr.add_argument("--dry-run", action="store_true", help="only say what would go")
    pr.add_argument("--format", choices=("text", "json"), default="text")
    pr.set_defaults(func=_prune)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    now = time.time()
    rows = entries()
    if args.format == "json":
        sys.stdout.write(json.dumps([{"path": str(e.path), "bytes": e.size,
                                      "age_s": round(now - e.mtime)} for e in rows]) + "\n")
        return 0
    for e in rows:
        print(f"{e.size / 1e6:9.0f} MB  {(now - e.mtime) / 86400:6.1f} d  {e.path}")
    print(f"{sum(e.size for e in rows) / 1e9:.2f} GB in {len(rows)} entries under "
          f"{cache_root()}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    result = prune(max_size=parse_size(args.max_size) if args.max_size else None,
                   max_age=parse_age(args.max_age) if args.max_age else None,
                   dry_run=args.dry_run)
    if args.format == "json":
        sys.stdout.write(json.dumps({
            "removed": [str(e.path) for e in result.removed], "freed_bytes": result.freed,
            "skipped": [{"path": str(e.path), "why": why} for e, why in result.skipped],
            "before_bytes": result.total_before, "dry_run": args.dry_run}) + "\n")
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for e in result.removed:
        print(f"{verb} {e.path} ({e.size / 1e6:.0f} MB)")
    for e, why in result.skipped:
        print(f"kept {e.path}: {why}")
    print(f"{verb} {len(result.removed)} entries, {result.freed / 1e9:.2f} GB of "
          f"{result.total_before / 1e9:.2f} GB")
    return 0
