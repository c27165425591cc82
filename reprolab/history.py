"""Past runs: read an artifact tree's results, compare two runs, retire old vmcores.

A run is a directory holding ``results.jsonl`` (one line per test case, see
:mod:`reprolab.run.record`). Comparing is by (test case, crash signature): the nightly question
is which signatures are new, which are gone, and which still reproduce at what rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprolab.errors import UserError
from reprolab.run.record import RESULTS_FILE, read_results

VMCORE_GLOBS = ("vmcore.elf", "vmcore.kdump")
PRUNED_NOTE = "vmcores-pruned.txt"


def list_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` that hold results, oldest first (names sort by time)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / RESULTS_FILE).is_file())


def resolve_run(given: str | None, root: Path) -> Path:
    """A run from a path, a run name under ``root``, or (None) the newest run under it."""
    if given is None:
        runs = list_runs(root)
        if not runs:
            raise UserError(f"no runs with {RESULTS_FILE} under {root}; name one")
        return runs[-1]
    for path in (Path(given), root / given):
        if (path / RESULTS_FILE).is_file():
            return path.resolve()
        if path.name == RESULTS_FILE and path.is_file():
            return path.parent.resolve()
    raise UserError(f"{given} is not a run: no {RESULTS_FILE} in it (or under {root})")


def previous_run(run: Path) -> Path:
    """The run before ``run`` in the same parent directory (the previous night)."""
    runs = [p.resolve() for p in list_runs(run.parent)]
    earlier = [p for p in runs if p.name < run.name]
    if not earlier:
        raise UserError(f"no run before {run.name} in {run.parent} to compare with")
    return earlier[-1]


@dataclass(frozen=True)
class SignatureRate:
    case: str
    signature: str
    hits: int
    attempts: int
    title: str | None

    @property
    def rate(self) -> float:
        return self.hits / self.attempts if self.attempts else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "signature": self.signature, "count": self.hits,
                "attempts": self.attempts, "rate": round(self.rate, 4), "title": self.title}


@dataclass(frozen=True)
class RunSummary:
    path: Path
    rows: tuple[dict[str, Any], ...]

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        try:
            rows = read_results(path)
        except ValueError as exc:
            raise UserError(f"{path / RESULTS_FILE} is not JSON lines: {exc}") from None
        for row in rows:
            if not isinstance(row, dict) or "case" not in row or "verdict" not in row:
                raise UserError(f"{path / RESULTS_FILE}: a line without case and verdict")
        return cls(path, tuple(rows))

    def signatures(self) -> dict[tuple[str, str], SignatureRate]:
        out: dict[tuple[str, str], SignatureRate] = {}
        for row in self.rows:
            n = int(row.get("kernel_attempts", row.get("attempts", 0)) or 0)
            for sig, count in (row.get("signatures") or {}).items():
                title = row.get("title") if len(row.get("signatures") or {}) == 1 else None
                out[(row["case"], sig)] = SignatureRate(row["case"], sig, int(count), n, title)
        return out

    @property
    def passed(self) -> bool:
        """Every case got the verdict its mode wants (a night with nothing to look at)."""
        return bool(self.rows) and all(row_passed(r) for r in self.rows)


def row_passed(row: dict[str, Any]) -> bool:
    verdict = row.get("verdict")
    if verdict == "infra-error":
        return False
    if row.get("mode") == "reproduce":
        return bool(row.get("hits"))
    if row.get("mode") == "explore":
        return True
    return not row.get("hits")


@dataclass(frozen=True)
class Comparison:
    run: Path
    other: Path
    new: tuple[SignatureRate, ...]
    gone: tuple[SignatureRate, ...]
    #: (now, before) for signatures seen in both runs.
    still: tuple[tuple[SignatureRate, SignatureRate], ...]
    #: (case, verdict now, verdict before) for cases whose verdict changed.
    verdicts: tuple[tuple[str, str | None, str | None], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "compared_with": str(self.other),
            "new": [s.to_json() for s in self.new],
            "gone": [s.to_json() for s in self.gone],
            "still": [{**now.to_json(), "rate_before": round(before.rate, 4),
                       "count_before": before.hits, "attempts_before": before.attempts}
                      for now, before in self.still],
            "verdict_changes": [{"case": c, "now": a, "before": b} for c, a, b in self.verdicts],
        }


def compare(run: RunSummary, other: RunSummary) -> Comparison:
    now, before = run.signatures(), other.signatures()
    verdict_now = {r["case"]: r["verdict"] for r in run.rows}
    verdict_before = {r["case"]: r["verdict"] for r in other.rows}
    changes = tuple(
        (case, verdict_now.get(case), verdict_before.get(case))
        for case in sorted(set(verdict_now) | set(verdict_before))
        if verdict_now.get(case) != verdict_before.get(case)
    )
    return Comparison(
        run=run.path,
        other=other.path,
        new=tuple(now[k] for k in sorted(set(now) - set(before))),
        gone=tuple(before[k] for k in sorted(set(before) - set(now))),
        still=tuple((now[k], before[k]) for k in sorted(set(now) & set(before))),
        verdicts=changes,
    )


@dataclass(frozen=True)
class PrunedCore:
    path: Path
    size: int


def prune_vmcores(root: Path, keep: int, *, dry_run: bool = False) -> list[PrunedCore]:
    """Delete the vmcores of passing runs under ``root`` except the newest ``keep`` of them.

    A run with any failing, reproduced-in-regression or infra-error case keeps its dumps:
    those are the ones someone will open. The console logs, dossiers and results stay; a
    note in the run directory lists the dumps removed, so a dangling path explains itself.
    """
    if keep < 0:
        raise UserError("--keep-vmcores must be 0 or more")
    passing = [p for p in list_runs(root) if RunSummary.read(p).passed]
    victims = passing[:-keep] if keep else passing
    removed: list[PrunedCore] = []
    for run in victims:
        cores = sorted(_vmcores(run))
        if not cores:
            continue
        gone = []
        for core in cores:
            size = core.stat().st_blocks * 512
            if not dry_run:
                core.unlink()
            removed.append(PrunedCore(core, size))
            gone.append(core)
        if not dry_run:
            with (run / PRUNED_NOTE).open("a") as fh:
                fh.writelines(f"{c.relative_to(run)}: removed by `reprolab results "
                              f"--prune-vmcores` (passing run, older than the {keep} kept)\n"
                              for c in gone)
    return removed


def _vmcores(run: Path) -> Iterable[Path]:
    for dirpath, _dirs, files in os.walk(run):
        for name in files:
            if name in VMCORE_GLOBS:
                yield Path(dirpath) / name
