"""Keep the load balancer and the migration paths busy: hogs, affinity churn, CPU hotplug.

Field bug: tasks blocked in ``double_rq_lock`` called from ``load_balance`` while the box
reboots. Reboot takes the secondary CPUs down (``migrate_tasks`` under the runqueue locks)
while the balancer moves tasks between those same runqueues. This scenario drives the same
locks from userspace: CPU hogs for the balancer to move, ``sched_setaffinity`` churn that
forces migrations (``__set_cpus_allowed_ptr`` -> ``move_queued_task``), a storm of short
pinned tasks, and hotplug cycles of every CPU that can go offline. Combine it with
:class:`~reprolab.scenario.reboot.RebootUnderLoad` for the "during reboot" part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reprolab.scenario.base import (
    STATE_DIR,
    GuestLike,
    Scenario,
    detached,
    read_int,
    require,
)

CYCLES = f"{STATE_DIR}/lb.cycles"
HOGS = f"{STATE_DIR}/lb.hogs"
CPU_SYS = "/sys/devices/system/cpu"


@dataclass(frozen=True)
class LoadBalanceStress(Scenario):
    name: ClassVar[str] = "load_balance"

    #: Unpinned busy loops for the balancer to move.
    hogs: int = 8
    #: Seconds between affinity flips of every hog (single CPU, then all); 0 disables.
    affinity_interval_s: float = 0.1
    #: Cycle every CPU that has an ``online`` file (usually all but CPU 0) off and on.
    hotplug: bool = True
    #: Seconds between hotplug rounds.
    hotplug_interval_s: float = 0.5
    #: Short-lived tasks pinned to rotating CPUs, back to back (a migration storm).
    migration_storm: bool = True

    def __post_init__(self) -> None:
        where = "load_balance_stress"
        require(0 <= self.hogs <= 256, where, f"hogs must be 0..256, got {self.hogs}")
        require(self.affinity_interval_s >= 0, where, "affinity_interval_s must not be negative")
        require(self.hotplug_interval_s >= 0, where, "hotplug_interval_s must not be negative")

    def _ncpu(self) -> str:
        return f"N=$(ls -d {CPU_SYS}/cpu[0-9]* | wc -l)"

    def hotplug_loop(self) -> str:
        return (
            f"while :; do for f in {CPU_SYS}/cpu[0-9]*/online; do [ -f $f ] || continue; "
            f"echo 0 > $f && echo 1 > $f && echo . >> {CYCLES}; done; "
            f"sleep {self.hotplug_interval_s}; done"
        )

    def affinity_loop(self) -> str:
        return (
            f"while :; do for p in $(cat {HOGS}); do "
            "taskset -pc $((RANDOM % N)) $p >/dev/null 2>&1; done; "
            f"sleep {self.affinity_interval_s}; for p in $(cat {HOGS}); do "
            "taskset -pc 0-$((N - 1)) $p >/dev/null 2>&1; done; "
            f"sleep {self.affinity_interval_s}; done"
        )

    def storm_loop(self) -> str:
        return "while :; do taskset -c $((RANDOM % N)) true 2>/dev/null; done"

    def inject_script(self) -> str:
        parts = [
            f"{self._ncpu()}; mkdir -p {STATE_DIR}; : > {HOGS}; : > {CYCLES}",
            f"n=0; while [ $n -lt {self.hogs} ]; do sh -c 'while :; do :; done' & "
            f"echo $! >> {HOGS}; n=$((n+1)); done",
        ]
        if self.affinity_interval_s > 0 and self.hogs:
            parts.append(f"( {self.affinity_loop()} ) &")
        if self.hotplug:
            parts.append(f"( {self.hotplug_loop()} ) &")
        if self.migration_storm:
            parts.append(f"( {self.storm_loop()} ) &")
        parts.append("wait")
        # "a & b" must not become "a &; b" (a syntax error): background items end with "&".
        script = "".join(p + (" " if p.endswith("&") else "; ") for p in parts)
        return detached(self.name, script.rstrip("; "))

    def cleanup_script(self) -> str:
        # Leave every CPU online, whatever the loop was doing when it was killed.
        return (f"for f in {CPU_SYS}/cpu[0-9]*/online; do [ -f $f ] && echo 1 > $f; done; "
                f"rm -f {HOGS}; true")

    def hotplug_cycles(self, guest: GuestLike) -> int:
        """Off-and-on cycles completed so far."""
        return read_int(guest, f"[ -f {CYCLES} ] && wc -l < {CYCLES} || echo 0")
