"""Field bugs on demand: repro rate of each positive control, hits of its negative control.

Each field bug has a positive control (its test case on 6.12 with ``testcases/patches``, the
field mechanism on) and a negative control (the same kernel, the mechanism's boot knob off).
Per bug this runs both through the ordinary :class:`reprolab.run.session.Session`, every attempt
(``until=all``, so the rate is a rate), and reports: the positive control's repro rate with
its Wilson and Clopper-Pearson 95% intervals, the negative control's hits, the time to the
first hit (wall time from the start of the positive run), the median attempt time, and the
bisect's steps, attempts and wall time where a bug has a bisect story (filled in by the
bisect bench; left empty here).

Run: ``.venv/bin/python bench/field_bugs.py [--attempts 5] [--negative-attempts 5]
[--only NAME ...]``. Results merge into bench/results/field_bugs.json by bug name, so bugs can
be measured in separate runs. The field-bug kernel (testcases/fieldkernel.py) must be built
first (``reprolab build-kernel "$(python testcases/fieldkernel.py)"``, as scripts/main.sh
does); each attempt boots a TCG guest.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reprolab.replay import load_testcase
from reprolab.run.session import Session
from reprolab.stats import ReproRate

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "testcases"
RESULTS = ROOT / "bench" / "results" / "field_bugs.json"
#: Filled by the bisect bench for bugs with a bisect story; kept when this bench rewrites.
BISECT_KEYS = ("bisect_steps", "bisect_attempts", "bisect_seconds")


@dataclass(frozen=True)
class FieldBug:
    """One field bug: its name, the field report, and its two controls (FILE::test)."""

    name: str
    field: str
    positive: str
    negative: str


#: Add a bug by adding an entry.
BUGS: tuple[FieldBug, ...] = (
    FieldBug(
        "cfs-bandwidth-unthrottle",
        "3.10 el7: Watchdog detected hard LOCKUP, RIP tg_unthrottle_up",
        "test_cfs_unthrottle_hard_lockup.py::test_cfs_unthrottle_hard_lockup_field_kernel",
        "test_cfs_unthrottle_hard_lockup.py::test_cfs_unthrottle_mechanism_off_field_kernel",
    ),
    FieldBug(
        "rt-throttling-reboot",
        "3.0.101: RT throttling activated, reboot hangs, hardware watchdog resets",
        "test_rt_throttling_reboot_watchdog.py::"
        "test_rt_starved_reboot_fires_the_watchdog_field_kernel",
        "test_rt_throttling_reboot_watchdog.py::"
        "test_rt_reboot_finishes_with_mechanism_off_field_kernel",
    ),
    FieldBug(
        "double-rq-lock-reboot",
        "3.x: CPUs stuck in double_rq_lock, reboot never completes",
        "test_double_rq_lock_reboot.py::test_double_rq_lock_deadlock_field_kernel",
        "test_double_rq_lock_reboot.py::test_double_rq_lock_mechanism_off_field_kernel",
    ),
    FieldBug(
        "vm-start-svm",
        "v4.1-rc2 + new-CPU patches: panic in kvm_cpu_vmxon at every qemu-kvm start "
        "(the SVM analogue under TCG)",
        "test_vmxon_nested_kvm.py::test_svm_vmstart_fault_reproduces",
        "test_vmxon_nested_kvm.py::test_svm_vmstart_negative_control",
    ),
)


@dataclass(frozen=True)
class ControlRun:
    attempts: int
    hits: int
    infra_errors: int
    durations: tuple[float, ...]
    #: Seconds from the start of the run to the end of the first hit's attempt.
    first_hit_seconds: float | None
    outcomes: tuple[str, ...]


def run_control(ref: str, attempts: int, artifacts: Path) -> ControlRun:
    loaded = load_testcase(str(CASES / ref))
    case = loaded.case.with_overrides(attempts=attempts, until="all")
    body = loaded.body()
    session = Session(artifacts=artifacts)
    durations: list[float] = []
    outcomes: list[str] = []
    hits = infra = 0
    first: float | None = None
    try:
        start = time.monotonic()
        for index in range(1, attempts + 1):
            t0 = time.monotonic()
            result, _ = session.run_attempt(case, index, body)
            durations.append(time.monotonic() - t0)
            outcomes.append(str(result.outcome))
            if result.hit:
                hits += 1
                if first is None:
                    first = time.monotonic() - start
            if str(result.outcome) == "infra-error":
                infra += 1
    finally:
        session.close()
    return ControlRun(attempts, hits, infra, tuple(durations), first, tuple(outcomes))


def bug_entry(bug: FieldBug, positive: ControlRun, negative: ControlRun,
              previous: dict[str, Any]) -> dict[str, Any]:
    counted = positive.attempts - positive.infra_errors
    wilson = ReproRate.measure(positive.hits, counted)
    exact = ReproRate.measure(positive.hits, counted, method="clopper-pearson")
    entry: dict[str, Any] = {
        "bug": bug.name,
        "field": bug.field,
        "positive_case": bug.positive,
        "negative_case": bug.negative,
        "positive": {
            "attempts": positive.attempts, "hits": positive.hits,
            "infra_errors": positive.infra_errors,
            "rate": wilson.rate,
            "wilson_95": [round(wilson.low, 4), round(wilson.high, 4)],
            "clopper_pearson_95": [round(exact.low, 4), round(exact.high, 4)],
            "time_to_first_hit_seconds": None if positive.first_hit_seconds is None
            else round(positive.first_hit_seconds, 1),
            "median_attempt_seconds": round(statistics.median(positive.durations), 1),
            "outcomes": list(positive.outcomes),
        },
        "negative": {
            "attempts": negative.attempts, "hits": negative.hits,
            "infra_errors": negative.infra_errors,
            "median_attempt_seconds": round(statistics.median(negative.durations), 1),
            "outcomes": list(negative.outcomes),
        },
    }
    for key in BISECT_KEYS:
        entry[key] = previous.get(key)
    return entry


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def print_table(entries: list[dict[str, Any]]) -> None:
    table = Table(title="Field bugs on the patched 6.12 kernel (TCG)")
    for col in ("bug", "repro (pos)", "Wilson 95%", "C-P 95%", "neg hits", "first hit s",
                "median s", "bisect steps", "bisect attempts", "bisect s"):
        table.add_column(col, justify="right")
    for e in entries:
        pos, neg = e["positive"], e["negative"]
        counted = pos["attempts"] - pos["infra_errors"]
        table.add_row(
            e["bug"], f"{pos['hits']}/{counted}",
            "{:.0%}-{:.0%}".format(*pos["wilson_95"]),
            "{:.0%}-{:.0%}".format(*pos["clopper_pearson_95"]),
            f"{neg['hits']}/{neg['attempts'] - neg['infra_errors']}",
            _cell(pos["time_to_first_hit_seconds"], "{:.0f}"),
            f"{pos['median_attempt_seconds']:.0f}",
            _cell(e.get("bisect_steps")), _cell(e.get("bisect_attempts")),
            _cell(e.get("bisect_seconds"), "{:.0f}"),
        )
    Console(width=160).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=5, help="positive-control attempts")
    parser.add_argument("--negative-attempts", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, choices=[b.name for b in BUGS])
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="where every attempt's artifacts are kept (default: "
                        "./artifacts/field_bugs-TIME)")
    args = parser.parse_args()
    artifacts: Path = args.artifacts or Path("artifacts") / time.strftime(
        "field_bugs-%Y%m%dT%H%M%S", time.gmtime())
    old: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    by_name: dict[str, dict[str, Any]] = {e["bug"]: e for e in old.get("bugs", [])}
    for bug in BUGS:
        if args.only is not None and bug.name not in args.only:
            continue
        pos = run_control(bug.positive, args.attempts, artifacts / bug.name / "positive")
        neg = run_control(bug.negative, args.negative_attempts,
                          artifacts / bug.name / "negative")
        by_name[bug.name] = bug_entry(bug, pos, neg, by_name.get(bug.name, {}))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        ordered = [by_name[b.name] for b in BUGS if b.name in by_name]
        ordered += [e for n, e in by_name.items() if n not in {b.name for b in BUGS}]
        RESULTS.write_text(json.dumps({
            "bench": "field_bugs", "host": platform.node(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kernel": "field-bug kernel (testcases/fieldkernel.py)",
            "bugs": ordered,
        }, indent=2) + "\n")
    print_table([by_name[b.name] for b in BUGS if b.name in by_name])
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
