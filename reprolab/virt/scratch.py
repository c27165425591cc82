"""Per-session scratch directories under the runtime root, and reaping the dead ones.

A session keeps its serial logs, overlays and key pair in one directory and removes it on
close. A runner killed with SIGKILL cannot; AUTODESTROY takes its domains with it but its
files stay. The directory carries its owner (host, pid and the pid's start time, like a
domain's run tag), so the next session removes what dead owners left, and never the
directory of a run still going.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from reprolab.virt.metadata import RunTag

OWNER_FILE = "owner.json"
PREFIX = "session-"
#: Scratch a reprolab without owner files left (or one from another host) goes after this.
MAX_AGE_S = 6 * 3600


@dataclass(frozen=True)
class ReapedScratch:
    path: Path
    reason: str


def claim(run_dir: Path) -> None:
    """Create ``run_dir`` and record this process as its owner."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    tag = RunTag.current("")
    owner = {"host": tag.host, "pid": tag.pid, "pid_start": tag.pid_start,
             "started": tag.started}
    (run_dir / OWNER_FILE).write_text(json.dumps(owner) + "\n")


def _owner(path: Path) -> RunTag | None:
    try:
        data = json.loads((path / OWNER_FILE).read_text())
        return RunTag(host=str(data["host"]), pid=int(data["pid"]),
                      pid_start=int(data["pid_start"]), user="", started=str(data["started"]),
                      test="")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except OSError:
        return 0.0


def reap_scratch(root: Path, *, keep: Path | None = None, max_age_s: float = MAX_AGE_S
                 ) -> list[ReapedScratch]:
    """Remove session directories whose owner is dead, and stale loose scratch files."""
    reaped: list[ReapedScratch] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return reaped
    for path in entries:
        if keep is not None and path == keep:
            continue
        reason = None
        if path.is_dir() and not path.is_symlink() and path.name.startswith(PREFIX):
            tag = _owner(path)
            alive = tag.owner_alive() if tag is not None else None
            if alive is False and tag is not None:
                reason = f"owner pid {tag.pid} is gone"
            elif alive is None and _age(path) > max_age_s:
                reason = f"no live owner known, untouched for {_age(path) / 3600:.1f} h"
        elif path.is_file() and ".serial.log" in path.name and _age(path) > max_age_s:
            # Serial logs older reprolab versions kept loose in the root.
            reason = f"loose scratch untouched for {_age(path) / 3600:.1f} h"
        if reason is None:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not os.path.lexists(path):
            reaped.append(ReapedScratch(path, reason))
    return reaped
