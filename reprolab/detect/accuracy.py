"""Accuracy of the crash titles against a labelled console corpus (syzkaller's format).

Shared by the accuracy test and the parser benchmark so both print the same figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reprolab.detect.report import parse_log


def corpus_path(anchor: Path) -> Path:
    """REPROLAB_CORPUS, else ``<checkout>/../shared/corpus/console-logs-dev.jsonl``.

    ``anchor`` is any path inside the checkout; the checkout is the first parent that holds
    pyproject.toml (CI copies shared/ beside a fresh clone).
    """
    env = os.environ.get("REPROLAB_CORPUS")
    if env:
        return Path(env)
    for parent in anchor.resolve().parents:
        if (parent / "pyproject.toml").exists():
            return parent.parent / "shared" / "corpus" / "console-logs-dev.jsonl"
    return anchor.resolve().parent / "console-logs-dev.jsonl"


def load_corpus(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def measure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Detected share of crashes, false positives, exact-title share, corrupted-flag share."""
    crashes = detected = exact = false_pos = corrupted_ok = 0
    misses: list[str] = []
    for row in rows:
        rep = parse_log(row["log"])
        if row["title"] is None:
            if rep is not None:
                false_pos += 1
                misses.append(f"{row['id']}: false positive {rep.title!r}")
            continue
        crashes += 1
        if rep is None:
            misses.append(f"{row['id']}: missed {row['title']!r}")
            continue
        detected += 1
        exact += rep.title == row["title"]
        corrupted_ok += rep.corrupted == row["corrupted"]
        if rep.title != row["title"]:
            misses.append(f"{row['id']}: {rep.title!r} != {row['title']!r}")
    n = max(crashes, 1)
    return {
        "logs": len(rows), "crashes": crashes, "detected": detected / n,
        "false_positives": false_pos, "exact_titles": exact / n,
        "corrupted_flag": corrupted_ok / n, "misses": misses,
    }
