"""A bisect step after a one-commit change: the persistent workspace next to a fresh tree.

A git tree is made from Debian's linux-source-6.12 (one base commit, then one commit per
step changing one line of kernel/watchdog.c, as a bisection between neighbouring commits
sees). Each commit is built with the small config through
:func:`reprolab.kernel.build.build_kernel`, exactly as ``reprolab bisect`` does:

1. *base*: the first commit, which creates the workspace (worktree + ``O=`` directory);
2. *workspace step* (x2): the next commits, reusing the workspace: only watchdog.c
   recompiles, then the link;
3. *fresh-tree step*: the workspace dropped first, so the step prepares a new worktree and
   ``O=`` directory as every step did before (ccache still warm): the "before" figure,
   measured in the same run.

The bench has its own cache root (a temporary directory) but shares the machine's ccache,
so the base build is mostly cache hits. Goal (issue 15.4): a workspace step at most 45 s on
2 cores. Run under the build lock: ``flock /tmp/reprolab-build.lock .venv/bin/python
bench/bench_bisect_step.py``; writes bench/results/bisect_step.json.
"""

from __future__ import annotations

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

from reprolab.kernel import workspace as workspace_mod
from reprolab.kernel.build import build_kernel, compute_key
from reprolab.kernel.spec import BuildSpec
from reprolab.paths import cache_root
from reprolab.proc import run

RESULTS = Path(__file__).resolve().parent / "results" / "bisect_step.json"
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
SHARED_CCACHE = Path("/var/lib/reprolab/cache/ccache")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
       "-c", "commit.gpgsign=false"]


def _commit(tree: Path, step: int) -> str:
    path = tree / "kernel" / "watchdog.c"
    path.write_text(path.read_text() + f"int reprolab_bench_step_{step} __maybe_unused;\n")
    run([*GIT, "-C", tree, "commit", "-q", "-am", f"step {step}"])
    return run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()


def _build(label: str, tree: Path, commit: str, console: Console) -> dict[str, Any]:
    spec = BuildSpec(source=str(tree), commit=commit)
    start = time.monotonic()
    with console.status(label) as status:
        kernel = build_kernel(spec, progress=lambda m: status.update(f"{label}: {m[:90]}"))
    seconds = time.monotonic() - start
    meta = json.loads((kernel.image.parent / "meta.json").read_text())
    row = {"case": label, "seconds": round(seconds, 1), "stages": meta["seconds"],
           "key": kernel.key}
    console.print(f"{label}: {seconds:.1f} s {meta['seconds']}")
    return row


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fresh", action="store_true",
                        help="workspace steps only (no fresh-tree comparison)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="rl-bench-bisect-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        os.environ["REPROLAB_CACHE"] = str(root / "cache")
        cache_root().mkdir(parents=True, exist_ok=True)
        if SHARED_CCACHE.is_dir():
            (cache_root() / "ccache").symlink_to(SHARED_CCACHE)
        tree = root / "linux"
        tree.mkdir()
        t0 = time.monotonic()
        with console.status("making a git tree of linux-source-6.12"):
            run(["tar", "-xf", TARBALL, "-C", tree, "--strip-components=1"])
            run([*GIT, "-C", tree, "init", "-q"])
            run([*GIT, "-C", tree, "add", "-A", "-f"])
            run([*GIT, "-C", tree, "commit", "-q", "-m", "base"])
        setup = time.monotonic() - t0
        console.print(f"git tree ready in {setup:.0f} s")
        base = run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()
        rows = [_build("base (creates the workspace)", tree, base, console)]
        for step in (1, 2):
            rows.append(_build(f"workspace step {step}", tree, _commit(tree, step), console))
        fresh = _commit(tree, 3)
        ws = workspace_mod.for_source(compute_key(BuildSpec(source=str(tree), commit=fresh))[1])
        assert ws is not None
        if not args.skip_fresh:
            workspace_mod.drop(ws)
            rows.append(_build("fresh-tree step (before)", tree, fresh, console))
        workspace_mod.drop(ws)
    steps = [r["seconds"] for r in rows if r["case"].startswith("workspace step")]
    fresh_rows = [r["seconds"] for r in rows if r["case"].startswith("fresh-tree")]
    before = fresh_rows[0] if fresh_rows else float("nan")
    table = Table(title="bisect step after a one-commit change (small 6.12 config, 2 cores)")
    for col in ("case", "seconds", "prepare", "config", "compile"):
        table.add_column(col, justify="right")
    for r in rows:
        st = r["stages"]
        table.add_row(r["case"], f"{r['seconds']:.1f}", str(st.get("prepare")),
                      str(st.get("config")), str(st.get("compile")))
    console.print(table)
    worst = max(steps)
    console.print(f"workspace step: worst {worst:.1f} s, {before / worst:.1f}x faster than a "
                  f"fresh-tree step ({before:.1f} s); goal <= 45 s: "
                  f"{'met' if worst <= 45 else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "bench": "bisect_step", "host": platform.node(), "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_note": "machine shared with other helpers' builds and guests; the fresh-tree "
                     "step and the workspace steps ran one after the other in this run",
        "loadavg": os.getloadavg(), "git_tree_setup_seconds": round(setup, 1),
        "worst_workspace_step_seconds": worst, "fresh_tree_step_seconds": before,
        "speedup": round(before / worst, 2), "goal_met": worst <= 45, "rows": rows,
    }, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
