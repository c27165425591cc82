"""report.md rendering: what a person reads first, including when debug info is missing."""

from __future__ import annotations

from typing import Any

from reprolab.triage.dossier import render_markdown


def _dossier(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vmcore": "/dumps/vmcore", "vmlinux": None, "debug_info": False,
        "debug_info_note": "debug info for this kernel is missing", "osrelease": "6.12.0",
        "build_id": "abcd", "uptime_s": 36.3, "panic_message": "Hard LOCKUP",
        "dmesg_crash": {"title": "BUG: hard lockup in tg_unthrottle_up", "kind": "hard-lockup",
                        "corrupted": False},
        "cpus": [{"cpu": 0, "ip_symbol": "tg_unthrottle_up+0x18",
                  "stack": ["walk_tg_tree_from+0x6a"], "stack_reliable": False}],
        "errors": {}, "dmesg_tail": ["[ 36.2] Kernel panic - not syncing: Hard LOCKUP"],
    }
    base.update(extra)
    return base


def test_missing_debug_info_is_said_first_and_stacks_are_marked_guesses() -> None:
    md = render_markdown(_dossier())
    assert md.index("Debug info missing") < md.index("## Panic")
    assert "`Hard LOCKUP`" in md and "**BUG: hard lockup in tg_unthrottle_up**" in md
    assert "? walk_tg_tree_from+0x6a" in md
    assert "## Runqueues" not in md


def test_debug_sections_render_tasks_locks_and_throttled_groups() -> None:
    md = render_markdown(_dossier(
        debug_info=True, vmlinux="/k/vmlinux", lockdep=True,
        cpus=[{"cpu": 1, "pid": 7, "comm": "stress", "stack": ["f+0x1/0x2"],
               "stack_reliable": True}],
        d_state_tasks=[{"pid": 9, "comm": "kworker/1:0", "stack": ["schedule+0x1/0x2"],
                        "held_locks": ["&rq->__lock at tg_set_cfs_bandwidth+0x10"]}],
        runqueues=[{"cpu": 1, "nr_running": 3, "cfs_nr_running": 2, "rt_nr_running": 1,
                    "rt_throttled": True,
                    "throttled_cfs_rqs": [{"group": "/bw/a", "runtime_remaining": -5,
                                           "nr_running": 1}]}],
        errors={"cpus": "FaultError: x"}))
    assert "Debug info missing" not in md
    assert "- CPU 1 pid 7 `stress`" in md and "  f+0x1/0x2" in md
    assert "holds &rq->__lock at tg_set_cfs_bandwidth+0x10" in md
    assert "| 1 | 3 | 2 | 1 | yes | /bw/a |" in md
    assert "- cpus: FaultError: x" in md
