"""Kernel build times: cold, after a one-line patch change (ccache), and a cache hit.

The small config (tinyconfig + reprolab's fragments) from Debian's linux-source-6.12,
built through :func:`reprolab.kernel.build.build_kernel` exactly as a test run would:

1. *cold*: an empty cache root (no kernel cache, no ccache), so every object compiles;
2. *patch A*: a one-line patch (a string in kernel/watchdog.c) gives a new cache key, so
   the tree is extracted, configured and built again, but ccache serves every unchanged
   object;
3. *patch B*: the same patch with its one line changed again, the case of iterating on a
   fix;
4. *cache hit*: the patch-B spec once more: a key lookup, nothing built.

The cold and patched builds use both cores for minutes; do not run two at once. The bench
uses its own cache root (``--cache``, default a fresh temporary directory), so it never
disturbs or benefits from the shared cache under /var/lib/reprolab.

Run: ``.venv/bin/python bench/bench_kernel_build.py [--source linux-source-6.12]``; writes
bench/results/kernel_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reprolab.kernel.build import build_kernel, toolchain_id
from reprolab.kernel.spec import parse_kernel_spec
from reprolab.proc import run

RESULTS = Path(__file__).resolve().parent / "results" / "kernel_build.json"
PATCH = """\
--- a/kernel/watchdog.c
+++ b/kernel/watchdog.c
@@ -1,4 +1,4 @@
-// SPDX-License-Identifier: GPL-2.0
+// SPDX-License-Identifier: GPL-2.0 {tag}
 /*
  * Detect hard and soft lockups on a system
  *
"""


def _timed(label: str, spec_text: str, console: Console) -> dict[str, Any]:
    spec = parse_kernel_spec(spec_text)
    assert spec.build is not None
    start = time.monotonic()
    with console.status(label) as status:
        kernel = build_kernel(spec.build, progress=lambda m: status.update(f"{label}: {m}"))
    seconds = time.monotonic() - start
    meta_path = kernel.image.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    stats = run(["ccache", "--print-stats"], env={"CCACHE_DIR": os.environ["CCACHE_DIR"]},
                check=False).stdout
    console.print(f"{label}: {seconds:.1f} s ({kernel.key})")
    return {
        "case": label,
        "seconds": round(seconds, 3),
        "stages": meta.get("seconds", {}),
        "key": kernel.key,
        "ccache": _ccache_counts(stats),
        "bzImage_bytes": kernel.image.stat().st_size,
        "vmlinux_bytes": kernel.vmlinux.stat().st_size if kernel.vmlinux else None,
    }


def _ccache_counts(stats: str) -> dict[str, int]:
    wanted = ("direct_cache_hit", "preprocessed_cache_hit", "cache_miss")
    counts = {}
    for line in stats.splitlines():
        key, _, value = line.partition("\t")
        if key in wanted:
            counts[key] = int(value)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="linux-source-6.12")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root to use (default: a fresh temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache root")
    args = parser.parse_args()
    root = args.cache or Path(tempfile.mkdtemp(prefix="reprolab-bench-kernel-"))
    os.environ["REPROLAB_CACHE"] = str(root)
    os.environ["CCACHE_DIR"] = str(root / "ccache")
    console = Console()
    patches = root / "bench-patches"
    rows = []
    try:
        rows.append(_timed("cold", f"build:{args.source}", console))
        for tag in ("A", "B"):
            (patches / tag).mkdir(parents=True, exist_ok=True)
            (patches / tag / "0001-one-line.patch").write_text(PATCH.format(tag=tag))
            rows.append(
                _timed(f"patch {tag} (one line, ccache)",
                       f"build:{args.source}+patches={patches / tag}", console)
            )
        rows.append(_timed("cache hit", f"build:{args.source}+patches={patches / 'B'}", console))
    finally:
        if args.cache is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    table = Table(title=f"kernel build: {args.source}, tinyconfig + reprolab fragments")
    for column in ("case", "seconds", "prepare", "config", "compile", "install",
                   "ccache hit/miss"):
        table.add_column(column, justify="right" if column != "case" else "left")
    for row in rows:
        stages = row["stages"]
        cc = row["ccache"]
        hits = cc.get("direct_cache_hit", 0) + cc.get("preprocessed_cache_hit", 0)
        table.add_row(
            row["case"], f"{row['seconds']:.1f}",
            *(f"{stages[s]:.1f}" if s in stages and row["case"] != "cache hit" else "-"
              for s in ("prepare", "config", "compile", "install")),
            f"{hits}/{cc.get('cache_miss', 0)} (cumulative)",
        )
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "source": args.source,
        "cpus": len(os.sched_getaffinity(0)),
        "host": platform.platform(),
        "toolchain": toolchain_id(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
