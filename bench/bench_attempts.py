"""Attempts per hour for the sysrq case: a fresh boot per attempt against snapshot restore.

Runs ``testcases/test_sysrq_panic.py`` (stock kernel, minimal image, 1 vCPU, ELF vmcore on
the panic) N times through the ordinary :class:`reprolab.run.session.Session`, then N times
through :class:`reprolab.run.snapshot.SnapshotSession` (one real boot, saved after the ready
marker, then a restore per attempt). Kernel and image are prepared before the clock
starts, so the figures are the attempt loop alone: boot or restore, the scenario, the
dump, triage and teardown. The snapshot run's first attempt pays the boot and the save;
it is included, as it would be in a real run.

Run: ``.venv/bin/python bench/bench_attempts.py [--attempts 6]``; writes
bench/results/attempts.json. Uses both cores' worth of TCG; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reprolab.replay import load_testcase
from reprolab.run.session import Session
from reprolab.run.snapshot import SnapshotSession

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "testcases" / "test_sysrq_panic.py"
RESULTS = ROOT / "bench" / "results" / "attempts.json"


def run_mode(mode: str, attempts: int, artifacts: Path) -> dict[str, Any]:
    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=attempts, until="all")
    body = loaded.body()
    session = SnapshotSession(artifacts=artifacts) if mode == "snapshot" else Session(
        artifacts=artifacts)
    durations: list[float] = []
    boots: list[float] = []
    infra_errors: list[str] = []
    hits = 0
    try:
        kernel = session.kernel(case.kernel, artifacts)
        session.image(case.guest.image, kernel)
        start = time.monotonic()
        index = 0
        while len(durations) < attempts:
            index += 1
            t0 = time.monotonic()
            result, _ = session.run_attempt(case, index, body)
            if result.outcome.value == "infra-error":
                # Other jobs on a shared machine restart libvirtd: not an attempt's cost.
                infra_errors.append(result.error or "?")
                if len(infra_errors) > 3 * attempts:
                    raise SystemExit(f"too many infrastructure errors: {infra_errors[-1]}")
                session.close()
                session = (SnapshotSession(artifacts=artifacts) if mode == "snapshot"
                           else Session(artifacts=artifacts))
                session.kernel(case.kernel, artifacts)
                time.sleep(5)
                continue
            durations.append(time.monotonic() - t0)
            if result.boot_seconds is not None:
                boots.append(result.boot_seconds)
            hits += result.hit
        total = time.monotonic() - start
    finally:
        session.close()
    return {
        "mode": mode,
        "attempts": attempts,
        "hits": hits,
        "total_seconds": round(total, 2),
        "attempts_per_hour": round(3600 * attempts / total, 1),
        "first_attempt_seconds": round(durations[0], 2),
        "median_attempt_seconds": round(statistics.median(durations), 2),
        "median_boot_or_restore_seconds": round(statistics.median(boots), 2) if boots else None,
        "attempt_seconds": [round(d, 2) for d in durations],
        "infra_errors_retried": len(infra_errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=6)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rl-bench-attempts-") as tmp:
        for mode in ("boot", "snapshot"):
            rows.append(run_mode(mode, args.attempts, Path(tmp) / mode))
    gain = rows[1]["attempts_per_hour"] / rows[0]["attempts_per_hour"]
    table = Table(title=f"sysrq case, {args.attempts} attempts per mode (TCG, 1 vCPU, 512 MiB)")
    for col in ("mode", "hits", "total s", "attempts/h", "first s", "median s",
                "median boot/restore s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["mode"], f"{r['hits']}/{r['attempts']}", f"{r['total_seconds']:.1f}",
                      f"{r['attempts_per_hour']:.0f}", f"{r['first_attempt_seconds']:.1f}",
                      f"{r['median_attempt_seconds']:.1f}",
                      str(r["median_boot_or_restore_seconds"]))
    Console().print(table)
    print(f"snapshot restore: {gain:.2f}x the attempts per hour")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "attempts", "case": str(CASE.relative_to(ROOT)), "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gain": round(gain, 2),
        "loadavg": os.getloadavg(),
        "load_note": "machine shared with other helpers (builds, guests, libvirtd restarts); "
                     "infrastructure errors are retried and counted, not timed",
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
