"""The fault-injection suite at full size: every fault, every phase, and what it found.

Runs tests/faults with FAULTS_FULL=1 (the runner killed with SIGKILL and with SIGINT in
boot, scenario and dump: six runs where CI does three; libvirtd stopped at boot, in the
scenario and during the dump where CI does the scenario) and a longer console flood, then
prints a table and writes bench/results/faults.json: per fault, whether it was injected,
whether the attempt was classified right (infrastructure error, or the kernel verdict it
had already reached), and the leaks found afterwards (domain, QEMU process, scratch, lock,
console bytes written before the fault).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

#: Test name -> (fault, phase it is injected in).
FAULTS = {
    "test_full_artifacts_disk_is_refused_before_the_guest_boots": ("artifacts disk full",
                                                                    "before boot"),
    "test_full_disk_during_the_dump_keeps_the_verdict": ("artifacts disk full", "dump"),
    "test_qemu_killed_during_boot_is_infrastructure": ("QEMU SIGKILL", "boot"),
    "test_qemu_killed_during_the_dump_keeps_the_verdict": ("QEMU SIGKILL", "dump"),
    "test_virtlogd_killed_under_a_console_flood_keeps_every_byte": (
        "virtlogd SIGKILL under console flood", "scenario"),
    "test_console_silent_from_boot_is_a_boot_timeout": ("console silent", "boot"),
}


def describe(name: str) -> tuple[str, str]:
    base, _, param = name.partition("[")
    if base == "test_libvirtd_stopped_is_libvirt_going_away":
        return "libvirtd stopped", param.rstrip("]")
    if base == "test_runner_killed":
        sig, _, phase = param.rstrip("]").partition("-")
        return f"runner {sig}", phase
    return FAULTS.get(base, (base, "?"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flood-lines", type=int, default=40_000,
                        help="numbered lines per console flood half (CI uses 5000)")
    parser.add_argument("-k", default=None, help="only tests matching (pytest -k)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.jsonl"
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "FAULTS_FULL": "1", "FAULTS_RECORD": str(record),
               "FAULTS_FLOOD_LINES": str(args.flood_lines), "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "pytest", str(REPO / "tests" / "faults"), "-q",
                "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
        if args.k:
            argv += ["-k", args.k]
        start = time.monotonic()
        done = subprocess.run(argv, cwd=REPO, env=env, check=False)
        total = time.monotonic() - start
        records = {json.loads(line)["test"].split("::")[-1]: json.loads(line)
                   for line in record.read_text().splitlines()} if record.exists() else {}
        cases = list(etree.parse(str(junit)).iter("testcase"))
        rows = []
        for case in cases:
            name = case.get("name", "")
            fault, phase = describe(name)
            rec = records.get(name, {})
            failed = case.find("failure") is not None or case.find("error") is not None
            leaks = rec.get("leaks")
            rows.append({
                "test": name, "fault": fault, "phase": phase,
                "injected": bool(rec),
                "classified_right": bool(rec.get("classified")),
                "leaks": leaks if leaks is not None else ["not checked (test stopped early)"],
                "console_lines_lost": rec.get("console_lines_lost"),
                "passed": not failed,
                "seconds": round(float(case.get("time", "0")), 1),
            })
    summary = {
        "faults_injected": sum(r["injected"] for r in rows),
        "classified_right": sum(r["classified_right"] for r in rows),
        "leaks_found": sum(len(r["leaks"]) for r in rows),
        "tests_passed": sum(r["passed"] for r in rows),
        "tests": len(rows),
        "total_seconds": round(total, 1),
        "pytest_exit": done.returncode,
        "flood_lines": 2 * args.flood_lines,
    }
    print(f"\n{'fault':<38} {'phase':<12} {'inj':>3} {'right':>5} {'leaks':>5} {'s':>6}")
    for r in rows:
        print(f"{r['fault']:<38} {r['phase']:<12} {'y' if r['injected'] else 'n':>3} "
              f"{'y' if r['classified_right'] else 'n':>5} {len(r['leaks']):>5} "
              f"{r['seconds']:>6}")
    print(json.dumps(summary))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"host": os.uname().nodename, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()),
           "summary": summary, "faults": rows}
    (RESULTS / "faults.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
