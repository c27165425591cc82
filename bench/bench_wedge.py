"""All-CPU wedge: time from the wedge to the verdict, and how often every CPU's stack is read.

A 2-vCPU guest on the small 6.12 kernel (``build:linux-source-6.12``) wedges
every vCPU with LKDTM HARDLOCKUP (interrupts off; a waiter pinned on each CPU with taskset,
released together through a FIFO), so no lockup detector can report and the console goes
silent. The harness must notice the silence, inject an NMI, dump, and unwind every CPU's
stack from the vmcore.

Per attempt: seconds from sending the wedge to the silence event, to the NMI, and to the
verdict (run_attempt returning: dump and triage included), and whether the dossier holds an
unwound stack for all 3 CPUs. The silence threshold dominates the first figure by design.

Run: ``.venv/bin/python bench/bench_wedge.py [--attempts 10] [--silence 20]``; writes
bench/results/wedge.json. Uses both cores' worth of TCG; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reprolab.case import CaseSpec
from reprolab.guest.handle import Guest
from reprolab.run.session import Session
from reprolab.scenario.lkdtm import all_cpu_wedge
from reprolab.triage.stacks import cpus_with_stacks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "wedge.json"
VCPUS = 2
WEDGE = all_cpu_wedge(VCPUS)


def _case(silence: int) -> CaseSpec:
    return CaseSpec.from_marker("bench::wedge", {
        "kernel": "build:linux-source-6.12",
        "guest": {"vcpus": VCPUS, "memory": "512M", "image": "minimal"},
        "cmdline": {"nmi_watchdog": 0},
        "silence_timeout": silence,
        "mode": "reproduce",
        "expect": {"in_stack": "lkdtm_HARDLOCKUP"},
    })


def _wedge(guest: Guest, sent: dict[str, float]) -> None:
    guest.console.run("true", timeout=60)  # the shell answers: wedge from here
    sent["mono"], sent["at"] = time.monotonic(), guest.elapsed()
    guest.console.send(WEDGE)
    guest.wait(600)


def run(attempts: int, silence: int, artifacts: Path) -> list[dict[str, Any]]:
    case = _case(silence)
    session = Session(artifacts=artifacts)
    rows: list[dict[str, Any]] = []
    try:
        kernel = session.kernel(case.kernel, artifacts)
        session.image(case.guest.image, kernel)
        for index in range(1, attempts + 1):
            sent: dict[str, float] = {}
            result, _ = session.run_attempt(case, index, lambda g, s=sent: _wedge(g, s))
            done = time.monotonic()
            at = {e.kind: e.at for e in result.events}
            cpus = 0
            if result.dossier is not None:
                cpus = cpus_with_stacks(json.loads(result.dossier.read_text()))
            wedge_at = sent.get("at")
            rows.append({
                "attempt": index,
                "outcome": str(result.outcome),
                "matched_in": result.matched_in,
                "to_silence_s": _since(at.get("no-output"), wedge_at),
                "to_nmi_s": _since(at.get("nmi-injected"), wedge_at),
                "to_verdict_s": round(done - sent["mono"], 1) if "mono" in sent else None,
                "cpus_with_stack": cpus,
                "every_cpu": cpus == VCPUS,
                "directory": str(result.directory),
            })
    finally:
        session.close()
    return rows


def _since(event_at: float | None, wedge_at: float | None) -> float | None:
    if event_at is None or wedge_at is None:
        return None
    return round(event_at - wedge_at, 1)


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 1) if got else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attempts", type=int, default=10)
    p.add_argument("--silence", type=int, default=20, help="silence_timeout in seconds")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rl-bench-wedge-", dir="/var/tmp") as tmp:
        rows = run(args.attempts, args.silence, Path(tmp))
    every = sum(r["every_cpu"] for r in rows)
    summary = {
        "attempts": len(rows),
        "silence_timeout_s": args.silence,
        "every_cpu_stack": every,
        "every_cpu_share": round(every / len(rows), 3) if rows else None,
        "median_to_silence_s": _median([r["to_silence_s"] for r in rows]),
        "median_to_nmi_s": _median([r["to_nmi_s"] for r in rows]),
        "median_to_verdict_s": _median([r["to_verdict_s"] for r in rows]),
        "outcomes": {o: sum(r["outcome"] == o for r in rows)
                     for o in sorted({r["outcome"] for r in rows})},
    }
    table = Table(title=f"all-CPU wedge, {VCPUS} vCPUs, silence {args.silence} s")
    for col in ("#", "outcome", "to silence s", "to NMI s", "to verdict s", "CPUs w/ stack",
                "matched in"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["attempt"]), r["outcome"], str(r["to_silence_s"]),
                      str(r["to_nmi_s"]), str(r["to_verdict_s"]),
                      f"{r['cpus_with_stack']}/{VCPUS}", str(r["matched_in"]))
    out = Console()
    out.print(table)
    out.print(summary)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"host": platform.node(), "summary": summary,
                                   "attempts": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
