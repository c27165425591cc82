"""Where a snapshot-restored attempt's CPU goes, and the floor that sets on this machine.

Issue 15 asks a restored sysrq attempt to cost at most 25% of a cold one. ``bench_attempts``
gives the ratio; this bench gives the reason it is what it is. It runs the sysrq case
(stock kernel, 1 vCPU, 512 MiB) cold a few times, for the cold median of the same run, then
through :class:`reprolab.run.snapshot.SnapshotSession`, and over the restored attempts past
the warm-up (the boot and save of each saved guest) records

- the machine's CPU time per attempt from /proc/stat: user, system, steal (taken by the host
  this VM runs on) and idle;
- every process's and thread's CPU time per attempt, sampled from /proc every 50 ms (a
  process that exits loses at most its last 50 ms), grouped by process and, for QEMU, by
  thread: the dump thread, the monitor's I/O thread, the main loop, the vCPU;
- what the last attempt's vmcore is made of: its nonzero pages inside the kernel image (the
  PT_LOAD segments of the vmlinux the guest booted) and elsewhere, and what compressing each
  page with zlib level 1 costs, as QEMU's kdump-zlib does, single-threaded.

The floor is the busy CPU time per attempt over the cores: however the work is scheduled, a
restored attempt cannot cost less wall time than that.

Run: ``.venv/bin/python bench/attempt_cpu.py [--attempts 24] [--warmup 8]``; writes
bench/results/attempt_cpu.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reprolab.kernel.artifacts import stock_kernel
from reprolab.kernel.pvh import boot_image
from reprolab.replay import load_testcase
from reprolab.run.session import Session
from reprolab.run.snapshot import BOOT_LOG, SnapshotSession
from reprolab.triage import kdump, rawdump

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "testcases" / "test_sysrq_panic.py"
RESULTS = ROOT / "bench" / "results" / "attempt_cpu.json"
GOAL_RATIO = 0.25
TICK = os.sysconf("SC_CLK_TCK")
PAGE = 4096


class Sampler:
    """CPU ticks of every thread on the machine, last seen value per (pid, tid)."""

    def __init__(self) -> None:
        self.ticks: dict[tuple[int, int], tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-sampler")

    def sample(self) -> None:
        me = os.getpid()
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                process = Path(f"/proc/{pid}/comm").read_text().strip()
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                try:
                    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                except OSError:
                    continue
                thread = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                self.ticks[(pid, tid)] = (_group(pid == me, process, thread),
                                          int(fields[11]) + int(fields[12]))

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def start(self) -> dict[tuple[int, int], tuple[str, int]]:
        self.sample()
        self._thread.start()
        return dict(self.ticks)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _group(runner: bool, process: str, thread: str) -> str:
    if runner:
        return "runner (this Python process)"
    if process.startswith("qemu-system"):
        if thread.startswith("CPU "):
            thread = "vCPU (TCG)"
        elif thread.startswith("qemu-system"):
            thread = "main loop"
        return f"QEMU {thread}"
    return process


def _machine() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def kernel_ranges(vmlinux: Path) -> list[tuple[int, int]]:
    """Physical (start, end) of the vmlinux's PT_LOAD segments: where the image sits."""
    data = vmlinux.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    ranges = []
    for i in range(phnum):
        p_type, _f, _off, _va, paddr, _filesz, memsz, _a = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            ranges.append((paddr, paddr + memsz))
    return ranges


def dump_makeup(vmcore: Path, ranges: list[tuple[int, int]], workdir: Path
                ) -> dict[str, dict[str, float]]:
    """Nonzero pages of the dump, in and out of the kernel image, and their zlib-1 cost."""
    plain = workdir / "plain.kdump"
    if rawdump.is_flattened(vmcore):
        rawdump.unflatten(vmcore, plain)
    else:
        plain = vmcore
    zero = bytes(PAGE)
    count: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for address, page in kdump.pages(plain):
        if page == zero:
            continue
        where = ("kernel image" if any(lo <= address < hi for lo, hi in ranges)
                 else "elsewhere")
        t0 = time.process_time()
        zlib.compress(page, 1)
        seconds[where] += time.process_time() - t0
        count[where] += 1
    return {where: {"mib": round(count[where] * PAGE / 2**20, 1),
                    "zlib1_seconds": round(seconds[where], 3)}
            for where in ("kernel image", "elsewhere")}


def attempts(mode: str, n: int, artifacts: Path) -> tuple[Session, Any, Any, list[float]]:
    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=n, until="all")
    session: Session = (SnapshotSession if mode == "snapshot" else Session)(
        artifacts=artifacts, overlap_teardown=True)
    kernel = session.kernel(case.kernel, artifacts)
    session.image(case.guest.image, kernel)
    return session, case, loaded.body(), []


def run_cold(n: int, artifacts: Path) -> list[float]:
    session, case, body, durations = attempts("boot", n, artifacts)
    try:
        for index in range(1, n + 1):
            t0 = time.monotonic()
            session.run_attempt(case, index, body)
            durations.append(time.monotonic() - t0)
    finally:
        session.close()
    return durations


def run_restored(n: int, warmup: int, artifacts: Path) -> dict[str, Any]:
    session, case, body, durations = attempts("snapshot", n, artifacts)
    sampler = Sampler()
    booted: list[int] = []
    last = None
    try:
        for index in range(1, n + 1):
            if index == warmup + 1:
                base = sampler.start()
                machine0 = _machine()
                t_start = time.monotonic()
            t0 = time.monotonic()
            result, _ = session.run_attempt(case, index, body)
            durations.append(time.monotonic() - t0)
            if not result.hit:
                raise SystemExit(f"attempt {index} did not reproduce: {result.outcome}")
            if (result.directory / BOOT_LOG).exists() and index > warmup:
                booted.append(index)
            last = result.directory
        session.finish_teardowns()  # the window's last dump and destroy are its cost too
        wall = time.monotonic() - t_start
        sampler.stop()
        machine1 = _machine()
    finally:
        session.close()
    steady = n - warmup
    groups: Counter[str] = Counter()
    for key, (group, ticks) in sampler.ticks.items():
        groups[group] += ticks - base.get(key, (group, 0))[1]
    stat = dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"),
                    (b - a for a, b in zip(machine0, machine1, strict=True)), strict=True))
    per = {k: round(v / TICK / steady, 3) for k, v in stat.items()}
    busy = round(per["user"] + per["nice"] + per["system"] + per["irq"] + per["softirq"], 3)
    return {
        "attempt_seconds": [round(d, 2) for d in durations],
        "warmup_attempts": warmup,
        "booted_in_window": booted,
        "window_seconds_per_attempt": round(wall / steady, 3),
        "machine_cpu_seconds_per_attempt": per,
        "busy_cpu_seconds_per_attempt": busy,
        "by_process_cpu_seconds_per_attempt": {
            g: round(t / TICK / steady, 3) for g, t in groups.most_common() if t > 0
            and t / TICK / steady >= 0.005},
        "last_attempt": str(last),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=8,
                        help="restored run's first attempts left out (boots and saves)")
    parser.add_argument("--cold", type=int, default=4)
    args = parser.parse_args()
    if args.attempts <= args.warmup:
        parser.error("--attempts must exceed --warmup")
    cores = os.cpu_count() or 1
    kernel = stock_kernel()
    with tempfile.TemporaryDirectory(prefix="rl-bench-cpu-") as tmp:
        cold = run_cold(args.cold, Path(tmp) / "cold")
        restored = run_restored(args.attempts, args.warmup, Path(tmp) / "restored")
        vmcore = next(Path(restored["last_attempt"]).glob("vmcore*"))
        makeup = dump_makeup(vmcore, kernel_ranges(boot_image(kernel)), Path(tmp))
        vmcore_bytes = vmcore.stat().st_size
    cold_median = statistics.median(cold)
    floor = restored["busy_cpu_seconds_per_attempt"] / cores
    out = {
        "bench": "attempt_cpu", "case": str(CASE.relative_to(ROOT)),
        "host": platform.node(), "cores": cores,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cold_attempt_seconds": [round(d, 2) for d in cold],
        "cold_median_seconds": round(cold_median, 3),
        "goal_restored_seconds": round(GOAL_RATIO * cold_median, 3),
        "cpu_floor_restored_seconds": round(floor, 3),
        "restored": restored,
        "vmcore": {"file": vmcore.name, "bytes": vmcore_bytes, "pages": makeup},
    }
    table = Table(title=f"restored sysrq attempt: CPU per attempt ({cores} cores, "
                        f"{args.attempts - args.warmup} attempts after {args.warmup})")
    table.add_column("what")
    table.add_column("CPU s / attempt", justify="right")
    for name, value in restored["machine_cpu_seconds_per_attempt"].items():
        if value:
            table.add_row(f"machine: {name}", f"{value:.3f}")
    for name, value in restored["by_process_cpu_seconds_per_attempt"].items():
        table.add_row(f"  {name}", f"{value:.3f}")
    for where, part in makeup.items():
        table.add_row(f"vmcore pages {where}: {part['mib']} MiB, QEMU's zlib-1 on them",
                      f"{part['zlib1_seconds']:.3f}")
    Console(width=120).print(table)
    print(f"restored attempt: {restored['window_seconds_per_attempt']:.2f} s wall, "
          f"{restored['busy_cpu_seconds_per_attempt']:.2f} CPU s busy -> floor "
          f"{floor:.2f} s on {cores} cores; goal {GOAL_RATIO:.0%} of the cold median "
          f"{cold_median:.2f} s = {GOAL_RATIO * cold_median:.2f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
