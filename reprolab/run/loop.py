"""The one repro loop: attempts of a test case until its stop rule, folded into a result.

The pytest plugin, ``reprolab repro`` and the bisection oracle all run attempts through
here, so "an attempt", "a hit" and "when to stop" mean the same thing everywhere: the plugin
and ``reprolab repro`` run :func:`run_case`; the bisection oracle, whose stop rule is its
sequential test, runs :func:`run_attempt` one attempt at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from reprolab.case import CaseSpec
from reprolab.errors import BootTimeout, Family
from reprolab.guest.handle import Guest
from reprolab.run.attempt import AttemptInterrupted, AttemptResult
from reprolab.run.record import CaseResult
from reprolab.run.verdict import Outcome

log = logging.getLogger(__name__)

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


def lost_to_the_harness(result: AttemptResult) -> bool:
    """Did this attempt test nothing because the harness or its plumbing failed in a way
    a second try may not (QEMU crashed: a TCG segfault was seen once in a CI run; the
    console stream was cut)? Not a host that is unusable (a lab pool moves on), not a
    boot timeout (a kernel that hangs in boot hangs again, and each try costs the whole
    timeout), not Ctrl-C."""
    failure = result.failure
    return (result.outcome is Outcome.INFRA_ERROR and failure is not None
            and failure.family is Family.INFRASTRUCTURE
            and failure.type != BootTimeout.__name__)


def run_case(runner: Runner, case: CaseSpec, body: Body, *,
             on_attempt: OnAttempt | None = None) -> CaseRun:
    """Attempts 1..N of ``case`` until its stop rule (``until=first-hit`` stops at a hit).

    An attempt :func:`lost_to_the_harness` is run once more under the next number: it
    said nothing about the kernel, so without that a transient QEMU crash would end a
    one-attempt regression case as an infrastructure error. Its artifacts and result
    stay with the case's attempts (a verdict counts only the attempts that tested the
    kernel). A retry lost too means the harness is broken, not unlucky: no more retries
    in this case.

    Ctrl-C raises :class:`CaseInterrupted`, which carries the attempts so far (the
    interrupted one included) for the caller's results file.
    """
    results: list[AttemptResult] = []
    body_errors: list[BaseException] = []
    index = counted = 0
    retrying = False
    may_retry = True
    while counted < case.attempts:
        index += 1
        try:
            result, body_error = run_attempt(runner, case, index, body)
        except AttemptInterrupted as exc:
            raise CaseInterrupted(exc.result, CaseResult(case, (*results, exc.result))) from exc
        results.append(result)
        if body_error is not None:
            body_errors.append(body_error)
        if on_attempt is not None:
            on_attempt(result, body_error)
        lost = lost_to_the_harness(result)
        if lost and retrying:
            may_retry = False
        retrying = lost and may_retry
        if retrying:
            log.warning("%s: attempt %d lost to the harness (%s); running it again as "
                        "attempt %d", case.name, index, result.error, index + 1)
            continue
        counted += 1
        if case.stops_after(result.hit):
            break
    return CaseRun(CaseResult(case, tuple(results)), tuple(body_errors))
