"""Which oracle a bisection asks, by name.

``reprolab bisect`` and each ``reprolab bisect-step`` child build their oracle from the same
spec, so the choice travels as a string: a registered name (``vm``, the real guests) or a
``module:factory`` import path. The import path exists for the harness's own tests and
benchmarks, which drive real ``git bisect`` runs with a seeded flaky oracle instead of VMs;
it is not a user-facing simulation mode.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reprolab.bisect.driver import AttemptOutcome, StepOracle
from reprolab.errors import UserError
from reprolab.run.attempt import AttemptResult
from reprolab.run.verdict import Outcome

#: Registered oracles: name -> ``module:factory``. The VM oracle lives with the attempt runner.
ORACLES: dict[str, str] = {
    "vm": "reprolab.bisect.vm_oracle:make_oracle",
}
DEFAULT_ORACLE = "vm"


@dataclass(frozen=True)
class OracleContext:
    """Everything an oracle factory may need to test commits of one tree."""

    #: The kernel tree being bisected (checked out at the commit under test).
    repo: Path
    #: The test case, as a pytest node id or a path under testcases/.
    testcase: str
    #: Where this bisection's attempts keep their artifacts.
    artifacts: Path
    #: Free-form ``KEY=VALUE`` settings passed through from the command line.
    options: Mapping[str, str] = field(default_factory=dict)


OracleFactory = Callable[[OracleContext], StepOracle]


def resolve_factory(spec: str) -> OracleFactory:
    target = ORACLES.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(
            f"unknown oracle {spec!r}: use one of {', '.join(sorted(ORACLES))} "
            f"or module:factory"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"oracle {spec!r} is not available: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"oracle {spec!r}: {module_name} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def load_oracle(spec: str, context: OracleContext) -> StepOracle:
    return resolve_factory(spec)(context)


def close_oracle(oracle: StepOracle) -> None:
    """Release what an oracle holds (a booted guest, a saved state), if it can."""
    close = getattr(oracle, "close", None)
    if callable(close):
        close()


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"oracle option {pair!r} is not KEY=VALUE")
        options[key] = value
    return options


def attempt_outcome(result: AttemptResult) -> AttemptOutcome:
    """What an attempt runner's :class:`AttemptResult` means to a bisection step.

    The VM oracle runs attempts through the same runner as ``reprolab run``; this keeps the
    mapping (other crashes carry their signature, infrastructure errors their message) in
    one place.
    """
    artifacts = result.directory
    if result.outcome is Outcome.REPRODUCED:
        return AttemptOutcome.hit(result.signature, artifacts=artifacts)
    if result.outcome is Outcome.NOT_REPRODUCED:
        return AttemptOutcome.miss(artifacts=artifacts)
    if result.outcome in (Outcome.OTHER_CRASH, Outcome.HANG):
        return AttemptOutcome.other_crash(
            result.signature or result.title or "unknown crash", artifacts=artifacts
        )
    return AttemptOutcome.infra_error(result.error or "infrastructure error", artifacts=artifacts)
