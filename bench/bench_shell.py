"""`reprolab shell --exec 'uname -r'` next to bare QEMU and virtme-ng, same kernel, one run.

Per round, in this order, each from a cold process to its exit (the stock kernel, TCG,
1 vCPU, 512 MiB):

* *bare QEMU*: ``qemu-system-x86_64 -kernel -initrd`` with reprolab's minimal initramfs plus
  a one-file cpio whose ``/bench-init`` prints ``uname -r`` and powers off: the floor;
* *bare QEMU, PVH vmlinux*: the same, booting the file reprolab boots (the same build's
  uncompressed vmlinux through its PVH entry, :mod:`reprolab.kernel.pvh`): the floor of
  reprolab's own boot path, so the ratio to it is reprolab's overhead alone;
* *reprolab shell*: ``reprolab shell --exec 'uname -r'`` (libvirt domain, console attach,
  ready marker, the command on the console, teardown);
* *virtme-ng*: ``vng -r KERNEL --disable-kvm --exec 'uname -r'``, installed in its own venv
  (``--vng``, default /var/tmp/speed-vng-venv/bin/vng; skipped with a note when missing).

Goal (issue 15.5): reprolab at most 1.2x bare, so at least 3x faster than virtme-ng.
The machine is shared with other helpers: ratios are per round, side by side. libvirt puts
its guests in the ``machine`` CPU cgroup, which competes with everything else on the host as
one task: under load a libvirt guest gets a fraction of what a QEMU started by hand gets. So
that the comparison is of the tools and not of the cgroups, bare QEMU and virtme-ng are run
in that same cgroup (``--cgroup``, default /sys/fs/cgroup/cpu/machine when it exists).
Run: ``.venv/bin/python bench/bench_shell.py [--rounds 3]``; writes bench/results/shell.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bareqemu import MACHINE_CGROUP, bare_initrd, bare_qemu, in_cgroup
from rich.console import Console
from rich.table import Table

from reprolab.image.build import build_image
from reprolab.kernel.artifacts import stock_kernel
from reprolab.kernel.pvh import boot_image
from reprolab.proc import run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "shell.json"
BARE_PVH = "bare QEMU, PVH vmlinux"
BENCH_INIT = "#!/usr/bin/busybox sh\n/usr/bin/busybox uname -r\n/usr/bin/busybox poweroff -f\n"


def _timed(argv: list[str], release: str) -> dict[str, Any]:
    # vng runs virtme-run and friends from PATH: its venv's bin must be on it.
    tool = next((a for a in argv if a.startswith("/")), argv[0])
    path = f"{Path(tool).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    start = time.monotonic()
    done = run(argv, check=False, timeout=900, env={"PATH": path})
    seconds = time.monotonic() - start
    ok = done.ok and release in done.stdout
    return {"seconds": round(seconds, 2), "ok": ok,
            "tail": "" if ok else done.tail(5)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vng", default="/var/tmp/speed-vng-venv/bin/vng")
    parser.add_argument("--cgroup", default=MACHINE_CGROUP,
                        help="CPU cgroup for bare QEMU and virtme-ng ('' for none)")
    args = parser.parse_args()
    kernel = stock_kernel()
    image = build_image("minimal", kernel)
    assert image.initrd is not None
    vng = args.vng if Path(args.vng).exists() else shutil.which("vng")
    tools: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rl-bench-shell-", dir="/var/tmp") as tmp:
        initrd = bare_initrd(image.initrd, Path(tmp), BENCH_INIT)
        tools["bare QEMU"] = bare_qemu(kernel.image, initrd,
                                       "console=ttyS0 rdinit=/bench-init panic=-1",
                                       cgroup=args.cgroup)
        pvh = boot_image(kernel)
        if pvh != kernel.image:
            # The file reprolab boots (the same build, uncompressed, through the PVH entry).
            tools[BARE_PVH] = bare_qemu(pvh, initrd, "console=ttyS0 rdinit=/bench-init panic=-1",
                                        cgroup=args.cgroup)
        tools["reprolab shell"] = [sys.executable, "-m", "reprolab.cli", "shell",
                                   "--artifacts", str(Path(tmp) / "art"), "--exec", "uname -r"]
        if vng:
            tools["virtme-ng"] = [*in_cgroup(args.cgroup), vng, "-r", str(kernel.image),
                                  "--disable-kvm", "--exec", "uname -r"]
        for rnd in range(1, args.rounds + 1):
            for name, argv in tools.items():
                row = {"round": rnd, "tool": name, **_timed(argv, kernel.release)}
                print(f"round {rnd} {name}: {row['seconds']} s ok={row['ok']} {row['tail']}")
                rows.append(row)
    summary = []
    for name in tools:
        mine = [r["seconds"] for r in rows if r["tool"] == name and r["ok"]]
        summary.append({"tool": name, "ok_runs": len(mine),
                        "median_seconds": statistics.median(mine) if mine else None,
                        "seconds": mine})
    ratios = []
    for rnd in range(1, args.rounds + 1):
        by = {r["tool"]: r["seconds"] for r in rows if r["round"] == rnd and r["ok"]}
        if "bare QEMU" in by and "reprolab shell" in by:
            entry = {"round": rnd, "reprolab_over_bare": round(by["reprolab shell"]
                                                               / by["bare QEMU"], 2)}
            if BARE_PVH in by:
                entry["reprolab_over_bare_pvh"] = round(by["reprolab shell"] / by[BARE_PVH], 2)
            if "virtme-ng" in by:
                entry["vng_over_reprolab"] = round(by["virtme-ng"] / by["reprolab shell"], 2)
            ratios.append(entry)
    table = Table(title=f"uname -r in a fresh guest, stock {kernel.release}, TCG, 1 vCPU, "
                        f"{args.rounds} rounds")
    for col in ("tool", "ok", "median s", "runs s"):
        table.add_column(col, justify="right")
    for s in summary:
        runs = [float(x) for x in s["seconds"] or []]  # type: ignore[union-attr]
        table.add_row(str(s["tool"]), str(s["ok_runs"]), str(s["median_seconds"]),
                      " ".join(f"{x:.1f}" for x in runs))
    Console().print(table)
    for r in ratios:
        print(f"round {r['round']}: reprolab/bare {r['reprolab_over_bare']}"
              + (f", reprolab/bare PVH {r['reprolab_over_bare_pvh']}"
                 if "reprolab_over_bare_pvh" in r else "")
              + (f", virtme-ng/reprolab {r['vng_over_reprolab']}" if "vng_over_reprolab" in r
                 else ""))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "shell", "host": platform.node(), "kernel": kernel.release,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_note": "machine shared with other helpers (kernel builds, guests); tools "
                     "interleaved per round, ratios per round side by side",
        "loadavg": os.getloadavg(), "vng": vng, "cgroup": args.cgroup or None,
        "summary": summary, "ratios": ratios,
        "runs": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
