"""The one repro loop: attempts of a test case until its stop rule, folded into a result.

The pytest plugin, ``reprolab repro`` and the bisection oracle all run attempts through
here, so "an attempt", "a hit" and "when to stop" mean the same thing everywhere: the plugin
and ``reprolab repro`` run :func:`run_case`; the bisection oracle, whose stop rule is its
sequential test, runs :func:`run_attempt` one attempt at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from reprolab.case import CaseSpec
from reprolab.guest.handle import Guest
from reprolab.run.attempt import AttemptInterrupted, AttemptResult
from reprolab.run.record import CaseResult

Body = Callable[[Guest], None]
#: Told of every attempt as it ends: its result and the test body's own failure.
OnAttempt = Callable[[AttemptResult, BaseException | None], None]


class Runner(Protocol):
    """What runs one attempt: :class:`reprolab.run.session.Session` (or a snapshot one).

    The seam for tests without guests: any object with this method runs the loop."""

    def run_attempt(self, case: CaseSpec, index: int, body: Body
                    ) -> tuple[AttemptResult, BaseException | None]: ...


@dataclass(frozen=True)
class CaseRun:
    """A case's attempts, and the failures of its test body (in attempt order)."""

    result: CaseResult
    body_errors: tuple[BaseException, ...]


class CaseInterrupted(AttemptInterrupted):
    """Ctrl-C during a case: the attempt's result and the case's attempts so far."""

    def __init__(self, result: AttemptResult, case_result: CaseResult) -> None:
        super().__init__(result)
        self.case_result = case_result


def run_attempt(runner: Runner, case: CaseSpec, index: int, body: Body
                ) -> tuple[AttemptResult, BaseException | None]:
    """One attempt: its result and the body's own failure. Infrastructure failures are
    results (``infra-error``); only bad input (:class:`UserError`) and Ctrl-C raise."""
    return runner.run_attempt(case, index, body)


def run_case(runner: Runner, case: CaseSpec, body: Body, *,
             on_attempt: OnAttempt | None = None) -> CaseRun:
    """Attempts 1..N of ``case`` until its stop rule (``until=first-hit`` stops at a hit).

    Ctrl-C raises :class:`CaseInterrupted`, which carries the attempts so far (the
    interrupted one included) for the caller's results file.
    """
    results: list[AttemptResult] = []
    body_errors: list[BaseException] = []
    for index in range(1, case.attempts + 1):
        try:
            result, body_error = run_attempt(runner, case, index, body)
        except AttemptInterrupted as exc:
            raise CaseInterrupted(exc.result, CaseResult(case, (*results, exc.result))) from exc
        results.append(result)
        if body_error is not None:
            body_errors.append(body_error)
        if on_attempt is not None:
            on_attempt(result, body_error)
        if case.stops_after(result.hit):
            break
    return CaseRun(CaseResult(case, tuple(results)), tuple(body_errors))
