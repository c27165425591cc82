"""The field bisect story, timed: `reprolab bisect` over the new-CPU-model patch series.

The series (testcases/patches/new-cpu-model/, six patches on Debian's linux-source-6.12, the
fifth brings the VM-start fault back) is turned into git commits exactly as
tests/integration/test_bisect_vm.py does, and bisected with the bundled nested_kvm case
(test_svm_first_vm_start_on_new_cpu_model) as the oracle. Per step: the commit, its
verdict, attempts, hits and wall time (the step's kernel build, ccache-fed, plus its boots
and attempts); overall: bisection steps, attempts, wall time and whether the named culprit
is the guilty patch.

The defaults are CI's (one attempt to measure the bad commit, one per step, the good commit
not re-checked); ``--calibrate`` and ``--max-attempts`` give a fuller run. Kernels go
through the shared cache, so a second run on a warm cache measures attempts, not builds.

Run: ``.venv/bin/python bench/bisect_series.py [--calibrate N] [--max-attempts N]``;
writes bench/results/bisect_series.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "bisect_series.json"
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from test_bisect_vm import CASE, CULPRIT_INDEX, make_series  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calibrate", type=int, default=1,
                        help="attempts on the bad commit (default 1)")
    parser.add_argument("--max-attempts", type=int, default=1,
                        help="attempt cap per step (default 1: the fault is deterministic)")
    parser.add_argument("--verify-good", action="store_true",
                        help="also run a step on the good commit (one more build)")
    args = parser.parse_args(argv)
    console = Console()
    # Kept when the bisection fails: its step log and attempts are the evidence.
    tmp = tempfile.mkdtemp(prefix="bisect-series-", dir="/var/tmp")
    work = Path(tmp)
    start = time.monotonic()
    commits = make_series(work / "linux")
    prepare = time.monotonic() - start
    out = work / "bisect"
    argv_ = [sys.executable, "-m", "reprolab.cli", "bisect", CASE,
             "--tree", str(work / "linux"), "--good", commits[0], "--bad", commits[-1],
             "--calibrate", str(args.calibrate), "--max-attempts", str(args.max_attempts),
             "--on-cap", "lean", "--out", str(out)]
    if not args.verify_good:
        argv_.append("--no-verify-good")
    begin = time.monotonic()
    done = subprocess.run(argv_, capture_output=True, text=True, cwd=work)
    wall = time.monotonic() - begin
    console.print(done.stdout[-4000:])
    if done.returncode != 0:
        console.print(done.stderr[-4000:])
    if not (out / "report.json").exists():
        console.print(f"no report: the bisection failed; evidence kept in {work}")
        return 1
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    culprit = commits[1 + CULPRIT_INDEX]
    steps = report.get("steps", [])
    table = Table(title="bisect of the new-CPU-model series (6 patches on 6.12)")
    for column in ("step", "commit", "patch", "verdict", "hits/attempts", "seconds"):
        table.add_column(column)
    for number, step in enumerate(steps, 1):
        index = commits.index(step["commit"]) if step["commit"] in commits else -1
        table.add_row(str(number) if not step.get("check") else step["check"],
                      step["commit"][:12], str(index) if index > 0 else "base",
                      str(step.get("verdict")), f"{step.get('hits')}/{step.get('attempts')}",
                      f"{float(step.get('duration', 0.0)):.0f}")
    console.print(table)
    result = {
        "host": platform.node(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "series_patches": len(commits) - 1,
        "calibrate": args.calibrate,
        "max_attempts_per_step": args.max_attempts,
        "verify_good": args.verify_good,
        "culprit_expected": culprit,
        "culprit_named": report.get("culprit"),
        "correct": report.get("culprit") == culprit,
        "calibration": report.get("calibration"),
        "steps": [{"commit": s["commit"], "patch": commits.index(s["commit"])
                   if s["commit"] in commits else None, "check": s.get("check"),
                   "verdict": s.get("verdict"), "hits": s.get("hits"),
                   "attempts": s.get("attempts"), "seconds": s.get("duration")}
                  for s in steps],
        "bisect_steps": sum(1 for s in steps if not s.get("check")),
        "step_attempts": sum(int(s.get("attempts") or 0) for s in steps),
        "attempts_total": sum(int(s.get("attempts") or 0) for s in steps) + args.calibrate,
        "tree_seconds": round(prepare, 1),
        "wall_seconds": round(wall, 1),
        "exit": done.returncode,
    }
    console.print(f"culprit {'right' if result['correct'] else 'WRONG'}: "
                  f"{result['bisect_steps']} steps, {result['attempts_total']} attempts "
                  f"(calibration included), {wall:.0f} s wall (+{prepare:.0f} s for the tree)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
