"""``reprolab match FIELD.log``: from a field console log (or crash's ``bt``) to the bundled
test case that reproduces the same crash, and the command that runs it.

The field log's signature is its kind, title and frames (the console report's stack, the
function the CPU was stuck in, crash's ``bt`` frames). Each bundled case declares what counts
as reproduced (its marker's ``expect``: kind, title, frame, in_stack); a case ranks by how
much of that the field signature satisfies, and a case that contradicts it (another kind,
another title) is left out. Among equal matches, a case that hunts the bug (``mode=
"reproduce"``, a positive control on a patched kernel) ranks above a regression check of a
kernel where the bug is fixed, since the user wants to see the crash, not its absence.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprolab.detect.lines import console_lines
from reprolab.detect.logfile import read_log
from reprolab.detect.report import crash_bt, parse_log
from reprolab.errors import InfraError, UserError
from reprolab.proc import run as run_proc

_COLLECTOR = "reprolab.commands.match_collect"
#: No bundled case matched (not an error of the input: an answer scripts can test).
EXIT_NO_MATCH = 1


@dataclass(frozen=True)
class FieldSignature:
    kind: str | None
    title: str | None
    titles: tuple[str, ...]
    frame: str | None
    stuck_in: str | None
    frames: tuple[str, ...]

    @property
    def key(self) -> str:
        name = self.stuck_in or self.frame
        return f"{self.kind or 'unknown'}:{name}" if name else (self.kind or "unknown")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "frame": self.frame,
                "stuck_in": self.stuck_in, "frames": list(self.frames), "key": self.key}


@dataclass(frozen=True)
class Candidate:
    nodeid: str
    mode: str
    kernel: str
    score: int
    matched: tuple[str, ...]
    preference: int
    skip: str | None

    @property
    def command(self) -> str:
        return f"reprolab repro {self.nodeid}"

    def to_json(self) -> dict[str, Any]:
        return {"case": self.nodeid, "mode": self.mode, "kernel": self.kernel,
                "score": self.score, "matched": list(self.matched), "skip": self.skip,
                "command": self.command}


def field_signature(data: bytes) -> FieldSignature:
    """The signature of a field log: the first crash report plus any crash ``bt``."""
    rep = parse_log(data)
    bts = crash_bt(console_lines(data.decode("utf-8", errors="replace")))
    if rep is None and not bts:
        raise UserError("no kernel crash report and no crash `bt` output in it: nothing to "
                        "match (give the console log of the crash, or crash's `bt`)")
    frames: list[str] = []
    for f in ([rep.stuck_in, rep.frame] if rep else []) + list(rep.frames if rep else ()):
        if f and f != "corrupted" and f not in frames:
            frames.append(f)
    for bt in bts:
        for f in ((bt.exception_rip,) if bt.exception_rip else ()) + bt.frames:
            if f not in frames:
                frames.append(f)
    if rep is None:
        return FieldSignature(None, None, (), bts[0].exception_rip, bts[0].exception_rip,
                              tuple(frames))
    titles = tuple(t for t in (rep.title, *rep.alt_titles, rep.fatal_title) if t)
    return FieldSignature(rep.kind, rep.title, titles,
                          None if rep.frame == "corrupted" else rep.frame, rep.stuck_in,
                          tuple(frames))


_PATCHED = re.compile(r"patch", re.IGNORECASE)
_NEGATIVE = re.compile(r"negative|_off\b|_control_off|mechanism_off|unpatched", re.IGNORECASE)
_POSITIVE = re.compile(r"positive", re.IGNORECASE)


def score_case(sig: FieldSignature, case: dict[str, Any]) -> Candidate | None:
    """How well a case's expectation matches the field signature; None if it contradicts."""
    expect = case.get("expect")
    if not isinstance(expect, dict):
        return None
    matched: list[str] = []
    score = 0
    kind = expect.get("kind")
    if isinstance(kind, str):
        if sig.kind is not None and kind != sig.kind:
            return None
        if kind == sig.kind:
            score += 3
            matched.append(f"kind={kind}")
    title = expect.get("title")
    if isinstance(title, str):
        try:
            hit = any(re.fullmatch(title, t) for t in sig.titles)
        except re.error:
            hit = False
        if hit:
            score += 5
            matched.append(f"title~{title}")
        elif sig.titles:
            return None
    frame = expect.get("frame")
    if isinstance(frame, str):
        if frame in (sig.frame, sig.stuck_in):
            score += 5
            matched.append(f"frame={frame}")
        elif frame in sig.frames:
            score += 2
            matched.append(f"frame {frame} in stack")
    in_stack = expect.get("in_stack")
    if isinstance(in_stack, str):
        if in_stack in sig.frames:
            score += 5 if in_stack in (sig.frame, sig.stuck_in) else 4
            matched.append(f"in_stack={in_stack}")
        elif not matched:
            return None
    if score == 0:
        return None
    name = case.get("name", "")
    mode = str(case.get("mode") or "regression")
    kernel = str(case.get("kernel") or "stock")
    preference = 0
    if mode == "reproduce":
        preference += 2
    if _PATCHED.search(kernel):
        preference += 1
    if _POSITIVE.search(name):
        preference += 1
    if _NEGATIVE.search(name):
        preference -= 4
    return Candidate(str(case["nodeid"]), mode, kernel, score, tuple(matched), preference,
                     case.get("skip"))


def rank(sig: FieldSignature, cases: list[dict[str, Any]]) -> list[Candidate]:
    found = [c for c in (score_case(sig, case) for case in cases) if c is not None]
    return sorted(found, key=lambda c: (-c.score, -c.preference, c.skip is not None, c.nodeid))


def collect_cases(where: Path) -> list[dict[str, Any]]:
    """Every case's marker under ``where``, by pytest's own collection in a subprocess."""
    if not where.exists():
        raise UserError(f"no test cases at {where} (give --cases DIR)")
    with tempfile.TemporaryDirectory(prefix="reprolab-match-") as tmp:
        out = Path(tmp) / "cases.json"
        done = run_proc(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "--continue-on-collection-errors", "-p", _COLLECTOR, str(where)],
            env={"REPROLAB_MATCH_OUT": str(out)}, check=False, timeout=300,
        )
        if not out.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise InfraError(f"collecting test cases under {where} failed: "
                             + " | ".join(tail))
        cases: list[dict[str, Any]] = json.loads(out.read_text())
    return cases


def _default_cases() -> Path:
    local = Path("testcases")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / "testcases"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "match",
        help="find the bundled test case that reproduces a field crash",
        description="Read a field console log (or crash's `bt` output), take its crash "
        "signature, rank the bundled test cases that reproduce the same signature and print "
        "the command that runs the best one.",
    )
    p.add_argument("log", type=Path, metavar="FIELD.log", help="console log or crash bt output")
    p.add_argument("--cases", type=Path, default=None,
                   help="test cases to rank (default: ./testcases or the bundled ones)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = read_log(args.log)
    try:
        sig = field_signature(data)
    except UserError as exc:
        raise UserError(f"{args.log}: {exc}") from None
    ranked = rank(sig, collect_cases(args.cases or _default_cases()))
    best = ranked[0] if ranked else None
    if args.format == "json":
        sys.stdout.write(json.dumps({
            "log": str(args.log), "signature": sig.to_json(),
            "candidates": [c.to_json() for c in ranked],
            "best": best.command if best else None,
        }) + "\n")
        return 0 if best else EXIT_NO_MATCH
    print(f"{args.log}: {sig.title or '(crash bt only)'}")
    print(f"  signature: {sig.key}   kind: {sig.kind}   stuck in: {sig.stuck_in}")
    if not ranked:
        print(f"no bundled test case reproduces {sig.key}")
        return EXIT_NO_MATCH
    print(f"  {'score':>5}  {'mode':<10} {'kernel':<28} case (matched)")
    for c in ranked:
        note = f"  [skipped here: {c.skip}]" if c.skip else ""
        print(f"  {c.score:>5}  {c.mode:<10} {c.kernel[:28]:<28} {c.nodeid} "
              f"({', '.join(c.matched)}){note}")
    assert best is not None
    print(f"best: {best.command}")
    return 0
