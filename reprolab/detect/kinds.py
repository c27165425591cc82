"""Event kinds: what a console line means for the guest, and whether it is dead.

The kind is this project's coarse vocabulary (what happened: a lockup, a stall, a panic), the
title is syzkaller's fine one (which bug). ``fatal`` tells the harness to dump now: the guest
is dead or stuck (panic, oops, faults, lockups, stalls, hung tasks), as opposed to reports the
kernel survives (warnings, sanitizer reports without panic_on_warn, RT throttling).
"""

from __future__ import annotations

import re
from typing import Final

PANIC: Final = "panic"
OOPS: Final = "oops"
BUG: Final = "bug"
WARNING: Final = "warning"
GPF: Final = "gpf"
PAGE_FAULT: Final = "page-fault"
SOFT_LOCKUP: Final = "soft-lockup"
HARD_LOCKUP: Final = "hard-lockup"
RCU_STALL: Final = "rcu-stall"
HUNG_TASK: Final = "hung-task"
WORKQUEUE_LOCKUP: Final = "workqueue-lockup"
RT_THROTTLING: Final = "rt-throttling"
KASAN: Final = "kasan"
KFENCE: Final = "kfence"
UBSAN: Final = "ubsan"
KMSAN: Final = "kmsan"
KCSAN: Final = "kcsan"
LOCKDEP: Final = "lockdep"
SPINLOCK_LOCKUP: Final = "spinlock-lockup"
MEMORY_LEAK: Final = "memory-leak"
CLOCKSOURCE_UNSTABLE: Final = "clocksource-unstable"
REBOOT: Final = "reboot"
BOOT_FAILURE: Final = "boot-failure"
OTHER: Final = "other"

ALL_KINDS: Final = (
    PANIC, OOPS, BUG, WARNING, GPF, PAGE_FAULT, SOFT_LOCKUP, HARD_LOCKUP, RCU_STALL, HUNG_TASK,
    WORKQUEUE_LOCKUP, RT_THROTTLING, KASAN, KFENCE, UBSAN, KMSAN, KCSAN, LOCKDEP,
    SPINLOCK_LOCKUP, MEMORY_LEAK, CLOCKSOURCE_UNSTABLE, REBOOT, BOOT_FAILURE, OTHER,
)

_BOOT_FAILURE_MSG = (
    r"VFS: Unable to mount root fs|No working init found|Requested init \S+ failed"
    r"|Failed to execute \S+ \(error|Unable to mount root fs"
)

#: (pattern, kind, fatal); first match wins, so specific rules precede generic ones.
_LINE_RULES: tuple[tuple[re.Pattern[str], str, bool], ...] = tuple(
    (re.compile(p), k, f)
    for p, k, f in (
        (_BOOT_FAILURE_MSG, BOOT_FAILURE, True),
        (r"Kernel panic - not syncing", PANIC, True),
        (r"Watchdog detected hard LOCKUP|Kernel panic - not syncing: Hard LOCKUP"
         r"|Watchdog CPU:\d+ (?:detected )?Hard LOCKUP", HARD_LOCKUP, True),
        (r"BUG: soft lockup", SOFT_LOCKUP, True),
        (r"INFO: rcu_(?:preempt|sched|bh|tasks\w*) (?:self-)?detected(?: expedited)? stall"
         r"|rcu: INFO: rcu_\w+ detected stalls? on", RCU_STALL, True),
        (r"^(?:(?!INFO: task ).)*INFO: task .* "
         r"(?:blocked (?:in I/O wait )?for more than|can't die)",
         HUNG_TASK, True),
        (r"BUG: workqueue lockup", WORKQUEUE_LOCKUP, True),
        (r"BUG: (?:spinlock|rwlock) lockup suspected", SPINLOCK_LOCKUP, True),
        (r"sched: RT throttling activated", RT_THROTTLING, False),
        (r"BUG: KASAN:", KASAN, False),
        (r"BUG: KFENCE:", KFENCE, False),
        (r"BUG: KMSAN:", KMSAN, False),
        (r"BUG: KCSAN:", KCSAN, False),
        (r"UBSAN:", UBSAN, False),
        (r"BUG: memory leak", MEMORY_LEAK, False),
        (r"general protection fault", GPF, True),
        (r"BUG: (?:unable to handle|kernel NULL pointer|Kernel NULL pointer|Unable to handle)"
         r"|Unable to handle kernel", PAGE_FAULT, True),
        (r"possible circular locking|possible recursive locking|inconsistent lock state"
         r"|irq lock inversion|-safe -> [A-Z]*-unsafe lock order|bad unlock balance"
         r"|held lock freed|still has locks held|lock held when returning"
         r"|suspicious RCU usage|non-static key|kernel/locking/lockdep\.c|Invalid wait context"
         r"|BUG: (?:spinlock|rwlock) ", LOCKDEP, False),
        (r"kernel BUG|Kernel BUG|BUG: stack guard page|PANIC: double fault", BUG, True),
        (r"invalid opcode:|divide.error:|stack segment: |Internal error:|Unhandled fault:"
         r"|Alignment trap:|\bOops(?: -|:) ", OOPS, True),
        (r"^(?:(?!clocksource).)*clocksource.*(?:unstable|Unstable)",
         CLOCKSOURCE_UNSTABLE, False),
        (r"Booting the kernel\.", REBOOT, True),
        (r"BUG:|BUG kmalloc-", BUG, False),
        (r"WARNING:", WARNING, False),
        (r"INFO:", OTHER, False),
    )
)


#: Markers sit at the start of a line (after its prefix): the kind is decided on this many
#: characters, which bounds the work on hostile lines.
CLASSIFY_SPAN = 512


def classify(line: str) -> tuple[str, bool]:
    """Kind and fatality of one console line already known to carry a crash marker."""
    line = line[:CLASSIFY_SPAN]
    for regex, kind, fatal in _LINE_RULES:
        if regex.search(line):
            return kind, fatal
    return OTHER, False


_EXTRA = re.compile(
    r"\bOops(?: -|:) |^(?:(?!clocksource).)*clocksource.*(?:unstable|Unstable)|"
    + _BOOT_FAILURE_MSG
)


def extra_marker(line: str) -> bool:
    """Markers the streaming detector reports beyond the crash-report headers."""
    return _EXTRA.search(line) is not None
