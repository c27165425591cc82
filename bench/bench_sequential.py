"""Attempts per bisection step: the sequential test against fixed attempt counts.

Simulated flaky oracle, no VMs: the figures are attempt counts (the cost that dominates a
real bisection, where one attempt is a guest boot plus a scenario), not wall time.

Three tables, for repro rates 0.1–0.9:

1. *Same error as fixed ten.* A fixed ten attempts per commit misses a bad commit with
   probability (1-p)^10. The sequential test is given that same error target; mean attempts
   per step over good and bad commits (half each, as in a bisection).
2. *Planned error.* The per-step error a 90%-confidence bisection over 1000 commits plans
   (Šidák split over 10 steps, with 95% on the rate bound): the fixed count needed to reach
   it, ceil(log(err)/log(1-p)), against the sequential mean.
3. *Whole bisections* over 64 commits: total attempts and how often the culprit was right,
   sequential (planned from a measured rate, as ``reprolab bisect`` does) against fixed ten.

Run: ``.venv/bin/python bench/bench_sequential.py [--trials N]``; writes
bench/results/sequential.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from reprolab.bisect.driver import AttemptOutcome, run_step
from reprolab.bisect.sequential import (
    StepPolicy,
    Verdict,
    expected_steps,
    per_step_error,
    policy_for_bisection,
)
from reprolab.stats import ReproRate

RATES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
FIXED = 10
RESULTS = Path(__file__).resolve().parent / "results" / "sequential.json"


class Flaky:
    """Bench-only simulated oracle: commits in ``bad`` hit at ``rate``, others never."""

    def __init__(self, rate: float, rng: random.Random, bad: set[str] | None = None) -> None:
        self.rate = rate
        self.rng = rng
        self.bad = bad

    def attempt(self, commit: str) -> AttemptOutcome:
        is_bad = self.bad is None or commit in self.bad
        if is_bad and self.rng.random() < self.rate:
            return AttemptOutcome.hit("sim")
        return AttemptOutcome.miss()


def _steps(policy: StepPolicy, rate: float, trials: int, rng: random.Random) -> dict[str, float]:
    bad_oracle, good_oracle = Flaky(rate, rng), Flaky(0.0, rng)
    bad_attempts = good_attempts = missed = 0
    for _ in range(trials):
        result = run_step(bad_oracle, "bad", policy)
        bad_attempts += result.decision.attempts
        missed += result.decision.verdict is not Verdict.BAD
        good_attempts += run_step(good_oracle, "good", policy).decision.attempts
    return {
        "mean_bad": bad_attempts / trials,
        "mean_good": good_attempts / trials,
        "mean": (bad_attempts + good_attempts) / (2 * trials),
        "missed": missed / trials,
    }


def _fixed_step(rate: float, attempts: int, rng: random.Random, bad: bool) -> bool:
    return bad and any(rng.random() < rate for _ in range(attempts))


def _bisections(rate: float, trials: int, rng: random.Random, commits: int = 64) -> dict[str, Any]:
    seq_attempts = fixed_attempts = seq_right = fixed_right = 0
    for trial in range(trials):
        culprit = rng.randrange(1, commits + 1)
        bad_set = {f"c{i}" for i in range(culprit, commits + 1)}
        # Calibrate on the bad commit as `reprolab bisect` does (10 attempts, at least 1 hit).
        hits = 0
        while hits == 0:
            hits = sum(rng.random() < rate for _ in range(10))
            seq_attempts += 10
        policy = policy_for_bisection(ReproRate.measure(hits, 10), candidates=commits)
        oracle = Flaky(rate, rng, bad_set)
        good, bad = 0, commits
        while bad - good > 1:
            mid = (good + bad) // 2
            result = run_step(oracle, f"c{mid}", policy)
            seq_attempts += result.attempts_run
            good, bad = (good, mid) if result.decision.verdict is Verdict.BAD else (mid, bad)
        seq_right += bad == culprit
        good, bad = 0, commits
        while bad - good > 1:
            mid = (good + bad) // 2
            fixed_attempts += FIXED
            hit = _fixed_step(rate, FIXED, rng, mid >= culprit)
            good, bad = (good, mid) if hit else (mid, bad)
        fixed_right += bad == culprit
        del trial
    return {
        "commits": commits,
        "sequential_attempts": seq_attempts / trials,
        "sequential_right": seq_right / trials,
        "fixed10_attempts": fixed_attempts / trials,
        "fixed10_right": fixed_right / trials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=4000, help="steps per rate per table")
    parser.add_argument("--bisections", type=int, default=300, help="bisections per rate")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    start = time.monotonic()

    planned_err = per_step_error(0.90 / 0.95, expected_steps(1000))
    rows: list[dict[str, Any]] = []
    for rate in RATES:
        same = (1 - rate) ** FIXED
        a = _steps(StepPolicy(bad_rate=rate, beta=same), rate, args.trials, rng)
        b = _steps(StepPolicy(bad_rate=rate, alpha=planned_err, beta=planned_err),
                   rate, args.trials, rng)
        fixed_needed = math.ceil(math.log(planned_err) / math.log(1 - rate))
        c = _bisections(rate, args.bisections, rng)
        rows.append({
            "rate": rate,
            "same_error_as_fixed10": {"target": same, **a, "fixed": FIXED},
            "planned_error": {"target": planned_err, **b, "fixed": fixed_needed},
            "bisection": c,
        })

    print("1) same miss probability as a fixed 10 attempts per commit "
          f"({args.trials} good + {args.trials} bad steps per rate)")
    print(f"{'rate':>5} {'target':>9} {'missed':>8} {'bad':>6} {'good':>6} {'mean':>6} "
          f"{'fixed':>6} {'saved':>6}")
    for row in rows:
        r = row["same_error_as_fixed10"]
        print(f"{row['rate']:5.1f} {r['target']:9.2e} {r['missed']:8.4f} {r['mean_bad']:6.2f} "
              f"{r['mean_good']:6.2f} {r['mean']:6.2f} {r['fixed']:6d} "
              f"{1 - r['mean'] / r['fixed']:6.0%}")
    print(f"\n2) planned per-step error {planned_err:.4f} "
          "(90% overall over 10 steps, 95% on the rate bound)")
    print(f"{'rate':>5} {'missed':>8} {'bad':>6} {'good':>6} {'mean':>6} {'fixed':>6} {'saved':>6}")
    for row in rows:
        r = row["planned_error"]
        print(f"{row['rate']:5.1f} {r['missed']:8.4f} {r['mean_bad']:6.2f} {r['mean_good']:6.2f} "
              f"{r['mean']:6.2f} {r['fixed']:6d} {1 - r['mean'] / r['fixed']:6.0%}")
    print(f"\n3) whole bisections over 64 commits ({args.bisections} per rate; sequential "
          "includes 10-attempt calibration)")
    print(f"{'rate':>5} {'seq att':>8} {'seq ok':>7} {'fix10 att':>9} {'fix10 ok':>8}")
    for row in rows:
        r = row["bisection"]
        print(f"{row['rate']:5.1f} {r['sequential_attempts']:8.1f} {r['sequential_right']:7.1%} "
              f"{r['fixed10_attempts']:9.1f} {r['fixed10_right']:8.1%}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "sequential",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0], "machine": platform.machine(),
        "trials": args.trials, "bisections": args.bisections, "seed": args.seed,
        "elapsed_s": round(time.monotonic() - start, 2),
        "rows": rows,
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
