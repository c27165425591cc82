"""Seeded flaky oracles for testing bisection without guests.

Not a reprolab feature: these stand in for the VM oracle so the sequential logic and a real
``git bisect run`` can be exercised with known repro rates. The tree oracle reads the rate
from a file committed in the test repository, so "which commit introduced the bug" is a
property of the git history, exactly as with a kernel tree.
"""

from __future__ import annotations

import random
from pathlib import Path

from reprolab.bisect.driver import AttemptOutcome
from reprolab.bisect.oracles import OracleContext

#: File in the test tree holding the repro rate of that commit ("0.4"), or a keyword:
#: "untestable" (build failure), "infra" (host failure), "other:SIG" (crashes elsewhere).
FLAG = "bug.rate"


class FlakyOracle:
    """Hits with probability ``rate`` (or ``false_rate`` for commits not in ``bad``)."""

    def __init__(self, rate: float, *, seed: int = 0, false_rate: float = 0.0) -> None:
        self.rate = rate
        self.false_rate = false_rate
        self.rng = random.Random(seed)
        self.bad: set[str] | None = None
        self.calls = 0

    def attempt(self, commit: str) -> AttemptOutcome:
        self.calls += 1
        bad = self.bad is None or commit in self.bad
        rate = self.rate if bad else self.false_rate
        if self.rng.random() < rate:
            return AttemptOutcome.hit("soft-lockup:target_fn")
        return AttemptOutcome.miss()


class TreeFlagOracle:
    """Reads :data:`FLAG` from the checked-out tree; seeded per commit for reproducibility."""

    def __init__(self, repo: Path, *, seed: int = 0, other_every: int = 0) -> None:
        self.repo = repo
        self.seed = seed
        self.other_every = other_every
        self.calls = 0
        self._rng: dict[str, random.Random] = {}

    def attempt(self, commit: str) -> AttemptOutcome:
        self.calls += 1
        rng = self._rng.setdefault(commit, random.Random(f"{self.seed}:{commit}"))
        flag = self.repo / FLAG
        text = flag.read_text().strip() if flag.exists() else "0"
        if text == "untestable":
            return AttemptOutcome.untestable("does not build (test flag)")
        if text == "infra":
            return AttemptOutcome.infra_error("host fell over (test flag)")
        if self.other_every and self.calls % self.other_every == 0:
            return AttemptOutcome.other_crash("oops:unrelated_fn")
        if rng.random() < float(text):
            return AttemptOutcome.hit("soft-lockup:target_fn")
        return AttemptOutcome.miss()


def from_context(context: OracleContext) -> TreeFlagOracle:
    """Factory in the shape ``reprolab bisect --oracle flaky_oracle:from_context`` loads."""
    return TreeFlagOracle(
        context.repo,
        seed=int(context.options.get("seed", "0")),
        other_every=int(context.options.get("other_every", "0")),
    )
