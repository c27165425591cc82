"""Driving ``git bisect run`` with sequential per-commit steps.

Two halves meet here. Inside one step (a child of ``git bisect run``), :func:`run_step`
asks a :class:`StepOracle` for attempts until the sequential test decides, and
:func:`step_main` turns that into the exit code git understands. Around the whole
bisection, :func:`bisect` starts git's bisection, runs it, reads the culprit and the log back,
and always resets the tree, so an interrupted run never leaves the user's kernel tree
half-bisected.

The oracle is a Protocol so the VM machinery (build, boot, attempt) stays out of this module
and tests can drive a real ``git bisect`` with a seeded flaky oracle instead of guests.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from reprolab.bisect.sequential import SequentialTest, StepDecision, StepPolicy, Verdict
from reprolab.errors import (
    EXIT_CODES,
    ExitContext,
    Family,
    InfraError,
    UntestableError,
    UserError,
)
from reprolab.errors import (
    exit_code as failure_exit,
)
from reprolab.proc import CommandResult, run
from reprolab.run.verdict import Outcome
from reprolab.stats import ReproRate

#: ``git bisect run`` exit codes (git-bisect(1)): 0 old, 1..127 new, 125 skip, >= 128 abort.
#: The failures' codes come from the one table, :data:`reprolab.errors.EXIT_CODES`.
EXIT_OLD = 0
EXIT_NEW = 1
_STEP = ExitContext.BISECT_STEP
EXIT_UNTESTABLE = EXIT_CODES[Family.KERNEL][_STEP]
EXIT_INFRA = EXIT_CODES[Family.INFRASTRUCTURE][_STEP]
EXIT_USAGE = EXIT_CODES[Family.USER][_STEP]
EXIT_INTERRUPTED = EXIT_CODES[Family.INTERRUPTED][_STEP]


@dataclass(frozen=True)
class AttemptOutcome:
    """One attempt's result as bisection sees it (:class:`Outcome` is the attempts' own).

    Only a hit (``reproduced``, the test case's target signature) and a miss
    (``not-reproduced``) are evidence. An
    ``other-crash`` is logged with its signature but decides nothing: the guest died of
    something else, so whether the target would have fired is unknown.
    """

    kind: Outcome
    #: Triage signature of the crash seen, if any (target or other).
    signature: str | None = None
    #: One line for the log: why untestable, what failed.
    detail: str | None = None
    #: The attempt's artifact directory, where there is one.
    artifacts: Path | None = None

    @classmethod
    def hit(cls, signature: str | None = None, **kw: Any) -> AttemptOutcome:
        return cls(Outcome.REPRODUCED, signature, **kw)

    @classmethod
    def miss(cls, **kw: Any) -> AttemptOutcome:
        return cls(Outcome.NOT_REPRODUCED, **kw)

    @classmethod
    def other_crash(cls, signature: str, **kw: Any) -> AttemptOutcome:
        return cls(Outcome.OTHER_CRASH, signature, **kw)

    @classmethod
    def untestable(cls, detail: str, **kw: Any) -> AttemptOutcome:
        return cls(Outcome.UNTESTABLE, detail=detail, **kw)

    @classmethod
    def infra_error(cls, detail: str, **kw: Any) -> AttemptOutcome:
        return cls(Outcome.INFRA_ERROR, detail=detail, **kw)


class StepOracle(Protocol):
    """Runs one attempt of the test case against ``commit``.

    When called from a bisection step the working tree is checked out at ``commit``; an
    oracle that builds the kernel should build once per commit and reuse it across attempts.
    Raising :class:`UntestableError` or :class:`InfraError` is equivalent to returning the
    matching outcome.
    """

    def attempt(self, commit: str) -> AttemptOutcome: ...


class StepStatus(StrEnum):
    DECIDED = "decided"
    UNTESTABLE = "untestable"
    INFRA_ERROR = "infra-error"


@dataclass(frozen=True)
class StepResult:
    """One step of a bisection: the sequential decision plus what it does not model."""

    commit: str
    status: StepStatus
    decision: StepDecision
    #: Attempts run in total, including other crashes.
    attempts_run: int
    #: Signatures of crashes that were not the target, with their counts.
    other_crashes: dict[str, int] = field(default_factory=dict)
    detail: str | None = None
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit, "status": self.status.value, **self.decision.as_dict(),
            "attempts_run": self.attempts_run, "other_crashes": self.other_crashes,
            "detail": self.detail, "duration": round(self.duration, 3),
        }


def run_step(oracle: StepOracle, commit: str, policy: StepPolicy) -> StepResult:
    """Attempt ``commit`` until the sequential test decides or the budget runs out."""
    test = SequentialTest(policy)
    others: Counter[str] = Counter()
    start = time.monotonic()

    def finish(status: StepStatus, *, capped: bool = False, detail: str | None = None,
               ran: int) -> StepResult:
        return StepResult(
            commit=commit, status=status, decision=test.decision(capped=capped),
            attempts_run=ran, other_crashes=dict(others), detail=detail,
            duration=time.monotonic() - start,
        )

    for ran in range(1, policy.max_attempts + 1):
        try:
            outcome = oracle.attempt(commit)
        except UntestableError as exc:
            outcome = AttemptOutcome.untestable(str(exc))
        except InfraError as exc:
            outcome = AttemptOutcome.infra_error(str(exc))
        if outcome.kind is Outcome.UNTESTABLE:
            return finish(StepStatus.UNTESTABLE, detail=outcome.detail, ran=ran)
        if outcome.kind is Outcome.INFRA_ERROR:
            return finish(StepStatus.INFRA_ERROR, detail=outcome.detail, ran=ran)
        if outcome.kind is Outcome.OTHER_CRASH:
            others[outcome.signature or "unknown"] += 1
            continue
        test.record(outcome.kind is Outcome.REPRODUCED)
        if test.done:
            return finish(StepStatus.DECIDED, ran=ran)
    return finish(StepStatus.DECIDED, capped=True, ran=policy.max_attempts)


def exit_code(result: StepResult, *, fix: bool = False) -> int:
    """The ``git bisect run`` exit code of a step.

    Regression hunts use git's default terms: a commit that reproduces is "bad" (new, 1).
    With ``fix`` the hunt is for the commit that made the bug go away, bisected with the
    terms old=broken/new=fixed, so a commit that still reproduces is old (0) and one where
    the bug is gone is new (1). Untestable commits and undecided steps are skipped (125);
    an infrastructure failure aborts (128), because blaming or clearing a commit for a host
    fault would send the bisection down the wrong half.
    """
    if result.status is StepStatus.INFRA_ERROR:
        return EXIT_INFRA
    if result.status is StepStatus.UNTESTABLE:
        return EXIT_UNTESTABLE
    verdict = result.decision.verdict
    if verdict is Verdict.UNDECIDED:
        return EXIT_UNTESTABLE
    reproduced = verdict is Verdict.BAD
    if fix:
        return EXIT_OLD if reproduced else EXIT_NEW
    return EXIT_NEW if reproduced else EXIT_OLD


def step_main(
    oracle: StepOracle,
    commit: str,
    policy: StepPolicy,
    *,
    fix: bool = False,
    step_log: Path | None = None,
) -> int:
    """One ``git bisect run`` step: decide, log one JSON line, return the exit code.

    Errors never escape as tracebacks, because git would read Python's exit 1 as "bad":
    a usage error aborts the bisection (129), an infrastructure error too (128).
    """
    try:
        result = run_step(oracle, commit, policy)
    except UserError as exc:
        print(f"reprolab bisect-step: error: {exc}", file=sys.stderr)
        return failure_exit(exc, _STEP)
    except InfraError as exc:
        print(f"reprolab bisect-step: infrastructure error: {exc}", file=sys.stderr)
        return failure_exit(exc, _STEP)
    except KeyboardInterrupt as exc:
        return failure_exit(exc, _STEP)
    except Exception:
        # A bug in the harness or the oracle: Python's own exit 1 would read as "bad".
        traceback.print_exc()
        return EXIT_INFRA
    code = exit_code(result, fix=fix)
    record = {**result.as_dict(), "exit": code, "time": time.time()}
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if step_log is not None:
        step_log.parent.mkdir(parents=True, exist_ok=True)
        with step_log.open("a") as sink:
            sink.write(line + "\n")
    return code


def calibrate(
    oracle: StepOracle, commit: str, attempts: int, *, confidence: float = 0.95
) -> tuple[ReproRate, dict[str, int]]:
    """Measure the bad commit's repro rate (all ``attempts``, no early stop).

    Returns the rate and the other crashes seen; an untestable bad commit is the user's to
    fix (it cannot anchor a bisection), an infrastructure failure propagates.
    """
    hits = informative = 0
    others: Counter[str] = Counter()
    for _ in range(attempts):
        outcome = oracle.attempt(commit)
        if outcome.kind is Outcome.UNTESTABLE:
            raise UserError(f"the bad commit {commit[:12]} is untestable: {outcome.detail}")
        if outcome.kind is Outcome.INFRA_ERROR:
            raise InfraError(f"calibrating {commit[:12]}: {outcome.detail}")
        if outcome.kind is Outcome.OTHER_CRASH:
            others[outcome.signature or "unknown"] += 1
            continue
        informative += 1
        hits += outcome.kind is Outcome.REPRODUCED
    return ReproRate.measure(hits, informative, confidence=confidence), dict(others)


# --- git side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BisectTerms:
    old: str
    new: str

    @classmethod
    def for_mode(cls, *, fix: bool) -> BisectTerms:
        return cls("broken", "fixed") if fix else cls("good", "bad")


@dataclass(frozen=True)
class BisectResult:
    """What ``git bisect run`` concluded."""

    #: The first commit with the new term (first bad, or first fixed with ``fix``).
    culprit: str | None
    subject: str | None
    #: When skipped commits leave git unsure: every commit that could be the culprit.
    candidates: tuple[str, ...]
    #: Per-step records read back from the step log (JSON objects, in order).
    steps: tuple[dict[str, Any], ...]
    #: ``git bisect log`` at the end (replayable with ``git bisect replay``).
    log: str
    #: Output of ``git bisect run``.
    output: str
    returncode: int
    fix: bool = False

    @property
    def found(self) -> bool:
        return self.culprit is not None


_FIRST = re.compile(r"^([0-9a-f]{40}) is the first (\w+) commit", re.MULTILINE)
_COULD_BE = re.compile(r"could be any of:\n((?:[0-9a-f]{40}\n?)+)", re.MULTILINE)


def parse_bisect_output(text: str, new_term: str) -> tuple[str | None, tuple[str, ...]]:
    """Culprit and candidate commits from ``git bisect run`` output."""
    for match in _FIRST.finditer(text):
        if match.group(2) == new_term:
            return match.group(1), (match.group(1),)
    could = _COULD_BE.search(text)
    if could:
        return None, tuple(could.group(1).split())
    return None, ()


def _git(repo: Path, *args: str, check: bool = True,
         error: type[UserError] | type[InfraError] = UserError) -> CommandResult:
    return run(["git", "-C", str(repo), *args], check=check, error=error)


def resolve_commit(repo: Path, rev: str) -> str:
    """Full hash of ``rev`` in ``repo``, or a UserError naming it."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not done.ok:
        raise UserError(f"{rev!r} is not a commit in {repo}")
    return done.stdout.strip()


def commit_subject(repo: Path, commit: str) -> str:
    return _git(repo, "log", "-1", "--format=%s", commit).stdout.strip()


def bisect_in_progress(repo: Path) -> bool:
    git_dir = _git(repo, "rev-parse", "--git-dir").stdout.strip()
    path = Path(git_dir)
    if not path.is_absolute():
        path = repo / path
    return (path / "BISECT_START").exists()


def check_range(repo: Path, good: str, bad: str, *, fix: bool = False) -> tuple[str, str]:
    """The full hashes of ``good`` and ``bad`` once they make a range git can bisect.

    Cheap (a few git calls) and run before anything is built or booted: a swapped, empty or
    unrelated range found after calibration costs a build and ten boots. The tree is checked
    first, so a directory that is not a git tree is not blamed on the commits.
    """
    _check_repo(repo)
    good_sha = resolve_commit(repo, good)
    bad_sha = resolve_commit(repo, bad)
    if good_sha == bad_sha:
        raise UserError(f"--good and --bad are the same commit ({good_sha[:12]}); there is "
                        "nothing to bisect")
    terms = BisectTerms.for_mode(fix=fix)
    new_sha, old_sha = (good_sha, bad_sha) if fix else (bad_sha, good_sha)
    if _git(repo, "merge-base", "--is-ancestor", old_sha, new_sha, check=False).ok:
        return good_sha, bad_sha
    if not _git(repo, "merge-base", old_sha, new_sha, check=False).ok:
        raise UserError(f"{good_sha[:12]} (good) and {bad_sha[:12]} (bad) share no history; "
                        "give two commits of the same kernel tree")
    if _git(repo, "merge-base", "--is-ancestor", new_sha, old_sha, check=False).ok:
        hint = ("with --fix the good commit is the newer one: swap them" if fix
                else "they look swapped: swap --good and --bad, or use --fix to find the "
                     "commit that fixed the bug")
    else:
        hint = "they are on branches that diverged; give an older --good" if not fix \
            else "they are on branches that diverged; give an older --bad"
    raise UserError(f"{old_sha[:12]} ({terms.old}) is not an ancestor of {new_sha[:12]} "
                    f"({terms.new}); {hint}")


def _check_repo(repo: Path) -> None:
    if not repo.is_dir():
        raise UserError(f"--tree {repo} is not a directory (give the kernel tree to bisect)")
    inside = _git(repo, "rev-parse", "--is-inside-work-tree", check=False)
    if not inside.ok or inside.stdout.strip() != "true":
        raise UserError(f"--tree {repo} is not a git repository (give the kernel tree to "
                        "bisect)")
    if bisect_in_progress(repo):
        raise UserError(
            f"a bisection is already in progress in {repo}; finish it or run `git bisect reset`"
        )
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if dirty:
        raise UserError(f"{repo} has uncommitted changes; commit or stash them before bisecting")


@contextmanager
def checked_out(repo: Path, commit: str) -> Iterator[None]:
    """Check ``commit`` out (detached) for the duration, then go back to where HEAD was.

    Used to calibrate on the bad commit before the bisection starts, since oracles test the
    working tree as it stands.
    """
    _check_repo(repo)
    branch = _git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    back = branch.stdout.strip() if branch.ok else _git(repo, "rev-parse", "HEAD").stdout.strip()
    _git(repo, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)
    try:
        yield
    finally:
        _git(repo, "checkout", "--quiet", back, error=InfraError)


def read_step_log(path: Path | None) -> tuple[dict[str, Any], ...]:
    if path is None or not path.exists():
        return ()
    records = []
    for line in path.read_text().splitlines():
        with suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return tuple(records)


def bisect(
    repo: Path,
    good: str,
    bad: str,
    step_command: Sequence[str],
    *,
    fix: bool = False,
    step_log: Path | None = None,
    timeout: float | None = None,
) -> BisectResult:
    """Run ``git bisect`` over ``repo`` between ``good`` and ``bad`` with ``step_command``.

    ``good`` and ``bad`` always mean "does not reproduce" and "reproduces". In a regression
    hunt ``good`` is the older commit; with ``fix`` the bug is old and ``bad`` is the older
    commit, bisected with the terms broken/fixed so the answer is the first fixed commit.
    ``step_log`` is the JSON-lines file the step command appends to (read back for the
    report). The tree is reset with ``git bisect reset`` whatever happens, Ctrl-C included.
    """
    repo = repo.resolve()
    good_sha, bad_sha = check_range(repo, good, bad, fix=fix)
    terms = BisectTerms.for_mode(fix=fix)
    # new = the later state: bad in a regression hunt, good (fixed) in a fix hunt.
    new_sha, old_sha = (good_sha, bad_sha) if fix else (bad_sha, good_sha)
    start = ["bisect", "start", f"--term-old={terms.old}", f"--term-new={terms.new}"]
    try:
        # Inside the try: a start that fails half-way must be reset too (no bisection was in
        # progress before, _check_repo made sure, so the reset cannot undo someone's work).
        started = _git(repo, *start, new_sha, old_sha, error=UserError)
        # Adjacent commits: git names the culprit at start, and a `bisect run` after that
        # would go on testing whatever HEAD is, outside the range.
        culprit, candidates = parse_bisect_output(started.stdout, terms.new)
        if culprit is not None:
            output, returncode = started.stdout, 0
        else:
            done = run(
                ["git", "bisect", "run", *step_command], cwd=repo, check=False,
                timeout=timeout,
            )
            output, returncode = done.stdout + done.stderr, done.rc
            culprit, candidates = parse_bisect_output(output, terms.new)
            if culprit is None and not candidates:
                _raise_aborted(done)
        log = _git(repo, "bisect", "log", check=False).stdout
        subject = commit_subject(repo, culprit) if culprit else None
        return BisectResult(
            culprit=culprit, subject=subject, candidates=candidates,
            steps=read_step_log(step_log), log=log, output=output,
            returncode=returncode, fix=fix,
        )
    finally:
        _git(repo, "bisect", "reset", check=False)


_ABORT = re.compile(r"exit code (\d+) from")


def _raise_aborted(done: CommandResult) -> None:
    """A bisection that ended without a culprit: say whose fault it was."""
    match = _ABORT.search(done.stderr + done.stdout)
    code = int(match.group(1)) if match else None
    message = (
        f"git bisect run stopped (step exit {code if code is not None else done.rc}): "
        f"{done.tail(2) or 'no output'}"
    )
    if code == EXIT_USAGE:
        raise UserError(message, detail=done.tail(40))
    raise InfraError(message, detail=done.tail(40))
