"""Any LKDTM crash type, by name, on kernels built with CONFIG_LKDTM (reprolab's own builds).

LKDTM (drivers/misc/lkdtm) provokes one kernel failure per name written to
``/sys/kernel/debug/provoke-crash/DIRECT``. Each type is a known-good input for the crash
detector: :data:`EXPECTED` says what the detector must report for it (event kind and title),
so a test per type checks that reprolab sees every failure class it claims to see. The
writer never returns from the lockup and hang types, so it is started detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reprolab.scenario.base import Scenario, detached, require

DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"


def all_cpu_wedge(vcpus: int) -> str:
    """Shell command that wedges every CPU at once with LKDTM HARDLOCKUP.

    One waiter pinned on each CPU, released together through a FIFO: all CPUs wedge within
    moments, with no fork or exec after the first (an IPI to a wedged CPU would leave the
    sender spinning with interrupts on, and the soft-lockup detector would speak).
    """
    return (
        "mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; "
        "rm -f /tmp/go; mkfifo /tmp/go; "
        f"for c in $(seq 0 {vcpus - 1}); do "
        f"taskset -c $c sh -c 'cat /tmp/go; echo HARDLOCKUP > {DIRECT}' & done; "
        "sleep 2; echo go > /tmp/go; wait"
    )


@dataclass(frozen=True)
class Expected:
    kind: str
    #: Regular expression for the report's title (fullmatch, like the marker's expect).
    title: str
    #: Command-line entries the detector needs to report this type promptly.
    cmdline: tuple[tuple[str, object], ...] = ()
    #: Writes needed: SPINLOCKUP returns holding its lock and deadlocks on the second one.
    repeat: int = 1
    #: The title is taken from the stack, not the RIP line (an unreliable unwinder, where
    #: every frame is "?", leaves such reports titled after the wrong function).
    needs_stack: bool = False

    def expect(self) -> dict[str, str]:
        return {"kind": self.kind, "title": self.title}


_LOCKUP_CMDLINE = (("watchdog_thresh", 2), ("rcupdate.rcu_cpu_stall_timeout", 60))

#: Crash types reprolab checks, with the report each must produce.
EXPECTED: dict[str, Expected] = {
    "PANIC": Expected("panic", r"kernel panic: dumptest"),
    "BUG": Expected("bug", r"kernel BUG in lkdtm_BUG"),
    "WARNING": Expected("warning", r"WARNING in lkdtm_WARNING"),
    "EXCEPTION": Expected("page-fault", r"BUG: unable to handle kernel NULL pointer "
                          r"dereference in lkdtm_EXCEPTION"),
    # Stalls are titled after the frame just above the entry point (syzkaller's
    # convention): LKDTM is entered by a write to debugfs, so that is full_proxy_write.
    "SOFTLOCKUP": Expected("soft-lockup", r"BUG: soft lockup in full_proxy_write",
                           _LOCKUP_CMDLINE, needs_stack=True),
    "HARDLOCKUP": Expected("hard-lockup", r"BUG: hard lockup in lkdtm_HARDLOCKUP",
                           _LOCKUP_CMDLINE),
    "SPINLOCKUP": Expected("soft-lockup",
                           r"BUG: soft lockup in (?:full_proxy_write|\w*spin_lock\w*)",
                           _LOCKUP_CMDLINE, repeat=2, needs_stack=True),
    "HUNG_TASK": Expected("hung-task", r"INFO: task hung in lkdtm_HUNG_TASK",
                          (("sysctl.kernel.hung_task_timeout_secs", 5),
                           ("sysctl.kernel.hung_task_check_interval_secs", 1)),
                          needs_stack=True),
}


@dataclass(frozen=True)
class Lkdtm(Scenario):
    name: ClassVar[str] = "lkdtm"

    crash_type: str = "PANIC"
    #: Writes of the type name (None: what :data:`EXPECTED` says, else 1).
    repeat: int | None = None

    def __post_init__(self) -> None:
        require(self.crash_type.isidentifier() and self.crash_type.upper() == self.crash_type,
                "lkdtm", f"crash type must be an LKDTM name like SOFTLOCKUP, got "
                f"{self.crash_type!r}")
        require(self.repeat is None or 1 <= self.repeat <= 10, "lkdtm",
                f"repeat must be 1..10, got {self.repeat}")

    @property
    def writes(self) -> int:
        if self.repeat is not None:
            return self.repeat
        return self.expected.repeat if self.expected is not None else 1

    @property
    def expected(self) -> Expected | None:
        return EXPECTED.get(self.crash_type)

    def setup_script(self) -> str:
        # Fails (and so says why) on a kernel without LKDTM or without this type.
        return (f"[ -e {DIRECT} ] || {{ echo 'no {DIRECT}: kernel without CONFIG_LKDTM' >&2; "
                f"exit 1; }}; grep -qw {self.crash_type} {DIRECT} || {{ echo 'LKDTM has no "
                f"crash type {self.crash_type}' >&2; exit 1; }}")

    def inject_script(self) -> str:
        write = f"echo {self.crash_type} > {DIRECT}"
        return detached(self.name, "; ".join([write] * self.writes))
