"""vmcore size on disk for the sysrq case: compressed (the default) next to raw ELF.

Runs ``testcases/test_sysrq_panic.py`` (stock kernel, minimal image, 1 vCPU, 512 MiB) through
the ordinary :class:`reprolab.run.session.Session` once per variant and round, alternating
the variants so all see the same machine load: kdump-zlib written by reprolab from QEMU's
memory (the default for a guest of this host, :mod:`reprolab.virt.livedump`; its first dump
in the process compresses every page, later ones only the pages that changed), kdump-zlib
written by QEMU through libvirt (``REPROLAB_DUMP_WRITER=qemu``), and ELF. Per attempt: the
dump's size on disk (allocated blocks, which is what a lab pays), the dump's seconds, whether
the dossier is complete (report.json with no section errors) and whether any full-size ELF is
left beside the dump.
Goal (issue 15.2): the compressed dump at most 10% of guest memory.

Run: ``.venv/bin/python bench/bench_vmcore.py [--rounds 2]``; writes bench/results/vmcore.json.
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

ROOT = Path(__file__).resolve().parent.parent
CASE = ROOT / "testcases" / "test_sysrq_panic.py"
RESULTS = ROOT / "bench" / "results" / "vmcore.json"
#: (label, --reprolab-dump format, REPROLAB_DUMP_WRITER)
VARIANTS = (("kdump-zlib, reprolab", "kdump-zlib", "reprolab"),
            ("kdump-zlib, QEMU", "kdump-zlib", "qemu"), ("elf, QEMU", "elf", "qemu"))


def one(artifacts: Path, label: str, fmt: str, writer: str, index: int
        ) -> dict[str, Any] | None:
    """One attempt in a session of its own (other helpers restart libvirtd on this machine:
    an infrastructure error is retried by the caller, not counted)."""
    os.environ["REPROLAB_DUMP_WRITER"] = writer
    loaded = load_testcase(str(CASE))
    case = loaded.case.with_dump(fmt)
    session = Session(artifacts=artifacts)
    try:
        t0 = time.monotonic()
        result, _ = session.run_attempt(case, index, loaded.body())
        seconds = time.monotonic() - t0
    finally:
        session.close()
    if result.vmcore is None:
        print(f"attempt {index} ({label}): {result.outcome.value}: {result.error}")
        return None
    guest_bytes = case.guest.memory_mib << 20
    on_disk = os.stat(result.vmcore).st_blocks * 512
    report = result.directory / "report.json"
    dossier = json.loads(report.read_text()) if report.exists() else None
    leftovers = [p.name for p in result.directory.iterdir()
                 if p.suffix == ".elf" and p != result.vmcore]
    return {
        "variant": label, "format": fmt, "verdict": result.outcome.value,
        "guest_mib": case.guest.memory_mib,
        "vmcore_bytes": result.vmcore.stat().st_size, "vmcore_on_disk_bytes": on_disk,
        "percent_of_guest_memory": round(100 * on_disk / guest_bytes, 1),
        "dump_seconds": round(result.vmcore_seconds or 0.0, 2),
        "attempt_seconds": round(seconds, 2),
        "dossier_complete": bool(dossier) and not dossier.get("errors"),
        "elf_left_behind": leftovers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    attempts: list[dict[str, Any]] = []
    infra_retries = 0
    with tempfile.TemporaryDirectory(prefix="rl-bench-vmcore-", dir="/var/tmp") as tmp:
        index = 0
        for _ in range(args.rounds):
            for label, fmt, writer in VARIANTS:
                for _try in range(4):
                    index += 1
                    row = one(Path(tmp), label, fmt, writer, index)
                    if row is not None:
                        attempts.append(row)
                        break
                    infra_retries += 1
                    time.sleep(5)
    rows = []
    for label, _fmt, _writer in VARIANTS:
        mine = [a for a in attempts if a["variant"] == label]
        rows.append({
            "variant": label,
            "attempts": len(mine),
            "median_on_disk_mb": round(statistics.median(
                a["vmcore_on_disk_bytes"] for a in mine) / 1e6, 1),
            "median_percent_of_guest_memory": statistics.median(
                a["percent_of_guest_memory"] for a in mine),
            "median_dump_seconds": statistics.median(a["dump_seconds"] for a in mine),
            "median_attempt_seconds": statistics.median(a["attempt_seconds"] for a in mine),
            "dossiers_complete": sum(a["dossier_complete"] for a in mine),
            "elf_left_behind": sum(bool(a["elf_left_behind"]) for a in mine),
        })
    ratio = rows[0]["median_on_disk_mb"] / rows[-1]["median_on_disk_mb"]
    table = Table(title=f"sysrq case vmcore, 512 MiB guest, {args.rounds} rounds, variants "
                        "alternating")
    for col in ("variant", "on disk MB", "% of guest", "dump s", "attempt s", "dossiers ok",
                "ELF left"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["variant"], f"{r['median_on_disk_mb']:.1f}",
                      f"{r['median_percent_of_guest_memory']:.1f}",
                      f"{r['median_dump_seconds']:.2f}", f"{r['median_attempt_seconds']:.1f}",
                      f"{r['dossiers_complete']}/{r['attempts']}",
                      str(r["elf_left_behind"]))
    Console(width=120).print(table)
    goal = all(r["median_percent_of_guest_memory"] <= 10 for r in rows[:-1])
    print(f"compressed/ELF size: {ratio:.3f}; goal <= 10% of guest memory: "
          f"{'met' if goal else 'MISSED'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "vmcore", "case": str(CASE.relative_to(ROOT)), "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_note": "machine shared with other helpers' builds and guests; variants alternate "
                     "within one run so sizes and ratios are side by side",
        "loadavg": os.getloadavg(), "infra_retries": infra_retries,
        "size_ratio": round(ratio, 3), "goal_met": goal,
        "rows": rows, "attempts": attempts,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
