"""Attempts per hour for the sysrq case: a fresh boot per attempt against snapshot restore.

Runs ``testcases/test_sysrq_panic.py`` (stock kernel, 1 vCPU, 512 MiB, vmcore on the panic)
N times through the ordinary :class:`reprolab.run.session.Session`, then N times through
:class:`reprolab.run.snapshot.SnapshotSession` (one real boot, saved after the ready
marker, then a restore per attempt), once on its own initramfs image (``minimal``) and once
on the disk-image kind (``tools-disk``: systemd on a qcow2 overlay, which the snapshot
freezes with the RAM and copies fresh for every restore). All four rows run in one process,
side by side, so the ratio restored/cold of each image kind is measured under one load.
Kernel and image are prepared before the clock starts, so the figures are the attempt
loop alone: boot or restore, the scenario, the dump, triage and teardown. The snapshot
run's first attempt pays the boot and the save; it is in the total and the attempts per
hour, as it would be in a real run, and left out of the "restored" median that the
restored/cold ratio (goal: at most 25%) compares with the cold median, as are the attempts
that booted a second and a third saved guest (the session does when the waits they save
repay a boot: ``--restored-attempts``, 24 by default, is a run long enough for both).

On the initramfs kind a third row, in the same run (half its runs before the reprolab rows,
half after), is the floor: bare
``qemu-system-x86_64`` with the same kernel and initramfs, whose init mounts /proc and
triggers the same sysrq crash (``panic=-1``, ``-no-reboot``: QEMU exits at the panic), in
libvirt's CPU cgroup. The cold attempt's median over it is the second goal (at most 1.3x);
the attempt also dumps, triages and tears down, which bare QEMU does not. reprolab boots the
stock kernel's uncompressed vmlinux through its PVH entry (:mod:`reprolab.kernel.pvh`), which
skips the XZ decompression bare QEMU's bzImage pays; a fourth row boots that same file bare,
so both floors are in the table: the bzImage a person would type, and reprolab's own path.

Run: ``.venv/bin/python bench/bench_attempts.py [--attempts 6] [--restored-attempts 24]``; writes
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from bareqemu import bare_initrd, bare_qemu
from rich.console import Console
from rich.table import Table

from reprolab.image.build import build_image
from reprolab.kernel.artifacts import stock_kernel
from reprolab.kernel.pvh import boot_image
from reprolab.proc import run
from reprolab.replay import load_testcase
from reprolab.run.session import Session
from reprolab.run.snapshot import BOOT_LOG, SnapshotSession

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "testcases" / "test_sysrq_panic.py"
RESULTS = ROOT / "bench" / "results" / "attempts.json"
IMAGES = ("minimal", "tools-disk")
#: Issue 15: a snapshot-restored attempt costs at most this share of a cold one.
GOAL_RATIO = 0.25
#: Issue 15: a cold attempt costs at most this many times a bare QEMU boot to the same point.
GOAL_COLD_OVER_BARE = 1.3
#: The floor on reprolab's own boot path: the same build's vmlinux through its PVH entry.
BARE_PVH = "bare QEMU, PVH vmlinux"
BARE_INIT = ("#!/usr/bin/busybox sh\n/usr/bin/busybox mkdir -p /proc\n"
             "/usr/bin/busybox mount -t proc proc /proc\n"
             "echo c > /proc/sysrq-trigger\n")


def run_bare(attempts: int, workdir: Path, *, pvh: bool = False) -> list[float]:
    """Bare QEMU to the sysrq panic, ``attempts`` times: the floor of a cold attempt
    (``pvh``: booting the file reprolab boots, the uncompressed vmlinux)."""
    kernel = stock_kernel()
    image = build_image("minimal", kernel)
    assert image.initrd is not None
    workdir.mkdir(parents=True, exist_ok=True)
    argv = bare_qemu(boot_image(kernel) if pvh else kernel.image,
                     bare_initrd(image.initrd, workdir, BARE_INIT),
                     "console=ttyS0 rdinit=/bench-init panic=-1")
    durations: list[float] = []
    for _ in range(attempts):
        t0 = time.monotonic()
        done = run(argv, check=False, timeout=300)
        seconds = time.monotonic() - t0
        if "sysrq triggered crash" not in done.stdout:
            raise SystemExit(f"bare QEMU did not reach the panic: {done.tail(5)}")
        durations.append(seconds)
    return durations


def bare_row(durations: list[float], *, pvh: bool) -> dict[str, Any]:
    return {"mode": BARE_PVH if pvh else "bare QEMU", "boot": "pvh" if pvh else "bzimage",
            "image": "minimal", "attempts": len(durations), "hits": len(durations),
            **_timings(durations, durations, sum(durations)),
            "median_boot_or_restore_seconds": None, "median_dump_seconds": None,
            "infra_errors_retried": 0}


def _timings(durations: list[float], steady: list[float], total: float) -> dict[str, Any]:
    """The timing columns of a row: one definition for the cold, restored and bare rows,
    whose ratios compare them."""
    return {
        "total_seconds": round(total, 2),
        "attempts_per_hour": round(3600 * len(durations) / total, 1),
        "first_attempt_seconds": round(durations[0], 2),
        "median_attempt_seconds": round(statistics.median(durations), 2),
        "median_steady_attempt_seconds": round(statistics.median(steady), 2),
        "attempt_seconds": [round(d, 2) for d in durations],
    }


def _session(mode: str, artifacts: Path) -> Session:
    """As ``reprolab run`` and the pytest plugin make it: a dumped guest's destroy runs on
    while the next attempt boots (a restore still waits for it: same domain name)."""
    if mode == "snapshot":
        return SnapshotSession(artifacts=artifacts, overlap_teardown=True)
    return Session(artifacts=artifacts, overlap_teardown=True)


def run_mode(mode: str, image: str, attempts: int, artifacts: Path, *, boot: str
             ) -> dict[str, Any]:
    if boot == "bzimage":
        os.environ["REPROLAB_BOOT"] = "bzimage"
    else:
        os.environ.pop("REPROLAB_BOOT", None)
    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=attempts, until="all")
    case = replace(case, guest=replace(case.guest, image=image))
    body = loaded.body()
    session = _session(mode, artifacts)
    durations: list[float] = []
    restored: list[float] = []
    boots: list[float] = []
    dumps: list[float] = []
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
                session = _session(mode, artifacts)
                session.kernel(case.kernel, artifacts)
                time.sleep(5)
                continue
            durations.append(time.monotonic() - t0)
            if not (result.directory / BOOT_LOG).exists():
                restored.append(durations[-1])  # no boot (and no save) in this attempt
            if result.boot_seconds is not None:
                boots.append(result.boot_seconds)
            if result.vmcore_seconds is not None:
                dumps.append(result.vmcore_seconds)
            hits += result.hit
        session.finish_teardowns()  # the last destroy is the run's cost too
        total = time.monotonic() - start
    finally:
        session.close()
    # A snapshot run's attempts that booted (and saved) a guest are not restores: the first,
    # and the one that boots a second guest to restore while the first is being dumped.
    steady = restored if mode == "snapshot" and restored else durations
    return {
        "mode": mode,
        "boot": boot,
        "image": image,
        "attempts": attempts,
        "hits": hits,
        **_timings(durations, steady, total),
        "median_boot_or_restore_seconds": round(statistics.median(boots), 2) if boots else None,
        "median_dump_seconds": round(statistics.median(dumps), 2) if dumps else None,
        "infra_errors_retried": len(infra_errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=6, help="per cold and bare row")
    parser.add_argument("--restored-attempts", type=int, default=24,
                        help="per snapshot row: a run long enough for the third saved guest "
                             "the session boots when attempts wait for restores (default: "
                             "%(default)s)")
    parser.add_argument("--boots", default="pvh,bzimage",
                        help="reprolab's boot paths to measure: pvh (the default: the stock "
                             "kernel's vmlinux), bzimage (REPROLAB_BOOT=bzimage)")
    parser.add_argument("--images", default=",".join(IMAGES),
                        help="image kinds to measure, comma-separated (default: %(default)s)")
    args = parser.parse_args()
    boots = [b for b in args.boots.split(",") if b]
    rows = []
    floor_runs: dict[bool, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rl-bench-attempts-") as tmp:

        def measure_floors(attempts: int) -> None:
            """Half of each floor's runs before the reprolab rows, half after: a load
            that drifts over the run (it does, 2.4-3.2 s for the PVH floor in separate
            runs) weighs on both sides of the ratio."""
            os.environ.pop("REPROLAB_BOOT", None)  # the floors name their file themselves
            if "minimal" not in args.images.split(","):
                return
            kinds = [False, *([True] if boot_image(stock_kernel()) != stock_kernel().image
                              else [])]
            for pvh in kinds:
                floor_runs.setdefault(pvh, []).extend(
                    run_bare(attempts, Path(tmp) / f"bare-{pvh}", pvh=pvh))

        measure_floors(args.attempts // 2)
        for boot in boots:
            for image in args.images.split(","):
                for mode in ("boot", "snapshot"):
                    count = args.restored_attempts if mode == "snapshot" else args.attempts
                    rows.append(run_mode(mode, image, count,
                                         Path(tmp) / boot / image / mode, boot=boot))
        measure_floors(args.attempts - args.attempts // 2)
        rows += [bare_row(durations, pvh=pvh) for pvh, durations in floor_runs.items()]
    ratios: dict[str, dict[str, float]] = {}
    floors = {r["boot"]: r for r in rows if r["mode"] in ("bare QEMU", BARE_PVH)}
    for boot in boots:
        for image in args.images.split(","):
            cold, restored = (next(r for r in rows if r["image"] == image
                                   and r["mode"] == m and r["boot"] == boot)
                              for m in ("boot", "snapshot"))
            entry = ratios[f"{image} {boot}"] = {
                "restored_over_cold": round(restored["median_steady_attempt_seconds"]
                                            / cold["median_steady_attempt_seconds"], 3),
                "gain_attempts_per_hour": round(restored["attempts_per_hour"]
                                                / cold["attempts_per_hour"], 2),
            }
            if image != "minimal":
                continue
            for floor_boot, floor in floors.items():
                entry[f"cold_over_bare_{floor_boot}"] = round(
                    cold["median_steady_attempt_seconds"] / floor["median_attempt_seconds"], 3)
    table = Table(title=f"sysrq case, {args.attempts} attempts per cold row, "
                        f"{args.restored_attempts} per snapshot row (TCG, 1 vCPU, 512 MiB)")
    for col in ("image", "boot", "mode", "hits", "total s", "attempts/h", "first s",
                "median s", "median restored s", "median boot/restore s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["image"], r["boot"], r["mode"], f"{r['hits']}/{r['attempts']}",
                      f"{r['total_seconds']:.1f}", f"{r['attempts_per_hour']:.0f}",
                      f"{r['first_attempt_seconds']:.1f}", f"{r['median_attempt_seconds']:.1f}",
                      f"{r['median_steady_attempt_seconds']:.1f}",
                      str(r["median_boot_or_restore_seconds"]))
    Console(width=150).print(table)
    for key, ratio in ratios.items():
        verdict = "meets" if ratio["restored_over_cold"] <= GOAL_RATIO else "misses"
        print(f"{key}: a restored attempt costs {ratio['restored_over_cold']:.0%} of a cold "
              f"one ({verdict} the {GOAL_RATIO:.0%} goal); "
              f"{ratio['gain_attempts_per_hour']:.2f}x the attempts per hour")
        for floor_boot in floors:
            value = ratio.get(f"cold_over_bare_{floor_boot}")
            if value is not None:
                verdict = "meets" if value <= GOAL_COLD_OVER_BARE else "misses"
                print(f"{key}: a cold attempt costs {value:.2f}x bare QEMU booting the "
                      f"{floor_boot} file ({verdict} the {GOAL_COLD_OVER_BARE}x goal there)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "attempts", "case": str(CASE.relative_to(ROOT)), "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "goal_restored_over_cold": GOAL_RATIO, "goal_cold_over_bare": GOAL_COLD_OVER_BARE,
        "ratios": ratios,
        "loadavg": os.getloadavg(),
        "load_note": "infrastructure errors are retried and counted, not timed; loadavg at "
                     "the end of the run",
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
