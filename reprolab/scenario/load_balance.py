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
    #: Unpinned SCHED_FIFO tasks (priorities 10, 11, ...) that sleep 100 us and spin a
    #: little, over and over: with more of them than CPUs, every wakeup and every sleep
    #: pushes or pulls RT tasks between runqueues (``push_rt_task``/``pull_rt_task`` ->
    #: ``double_lock_balance``), the paths that hold two runqueue locks at once.
    rt_churn: int = 0
    #: CPUs the load may use (hogs, affinity churn, storm, RT churn, hotplug); None: all.
    #: A hang case keeps a CPU out (with ``isolcpus=N`` so the balancer and RT push/pull
    #: leave it alone too): that CPU takes no runqueue lock of the two that deadlock, keeps
    #: its timer and reports them through the buddy hard-lockup detector.
    cpus: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        where = "load_balance_stress"
        require(0 <= self.hogs <= 256, where, f"hogs must be 0..256, got {self.hogs}")
        require(self.affinity_interval_s >= 0, where, "affinity_interval_s must not be negative")
        require(self.hotplug_interval_s >= 0, where, "hotplug_interval_s must not be negative")
        require(0 <= self.rt_churn <= 64, where, f"rt_churn must be 0..64, got {self.rt_churn}")
        if self.cpus is not None:
            require(len(self.cpus) >= 1 and len(set(self.cpus)) == len(self.cpus)
                    and all(isinstance(c, int) and 0 <= c < 4096 for c in self.cpus),
                    where, f"cpus must be distinct CPU numbers 0..4095, got {self.cpus!r}")

    def _cpu_list(self) -> str:
        """The load's CPUs as a taskset list."""
        if self.cpus is None:
            return "0-$((N - 1))"
        return ",".join(str(c) for c in self.cpus)

    def _pick(self) -> str:
        """Shell expression: one of the load's CPUs at random."""
        if self.cpus is None:
            return "$((RANDOM % N))"
        return "$(echo $CPUS | cut -d' ' -f$((RANDOM % N + 1)))"

    def _pin(self) -> str:
        """Prefix that keeps a command on the load's CPUs."""
        return "" if self.cpus is None else f"taskset -c {self._cpu_list()} "

    def _ncpu(self) -> str:
        if self.cpus is not None:
            return f"CPUS='{' '.join(str(c) for c in self.cpus)}'; N={len(self.cpus)}"
        return f"N=$(ls -d {CPU_SYS}/cpu[0-9]* | wc -l)"

    def _online_files(self) -> str:
        if self.cpus is None:
            return f"{CPU_SYS}/cpu[0-9]*/online"
        return " ".join(f"{CPU_SYS}/cpu{c}/online" for c in self.cpus)

    def hotplug_loop(self) -> str:
        return (
            f"while :; do for f in {self._online_files()}; do [ -f $f ] || continue; "
            f"echo 0 > $f && echo 1 > $f && echo . >> {CYCLES}; done; "
            f"sleep {self.hotplug_interval_s}; done"
        )

    def affinity_loop(self) -> str:
        return (
            f"while :; do for p in $(cat {HOGS}); do "
            f"taskset -pc {self._pick()} $p >/dev/null 2>&1; done; "
            f"sleep {self.affinity_interval_s}; for p in $(cat {HOGS}); do "
            f"taskset -pc {self._cpu_list()} $p >/dev/null 2>&1; done; "
            f"sleep {self.affinity_interval_s}; done"
        )

    def storm_loop(self) -> str:
        return f"while :; do taskset -c {self._pick()} true 2>/dev/null; done"

    def rt_churn_loop(self) -> str:
        spin = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); done"
        return (
            f"n=0; while [ $n -lt {self.rt_churn} ]; do {self._pin()}chrt -f $((10 + n)) sh -c "
            f"'while :; do usleep 100; {spin}; done' & n=$((n+1)); done"
        )

    def inject_script(self) -> str:
        parts = [
            f"{self._ncpu()}; mkdir -p {STATE_DIR}; : > {HOGS}; : > {CYCLES}",
            f"n=0; while [ $n -lt {self.hogs} ]; do {self._pin()}sh -c 'while :; do :; done' & "
            f"echo $! >> {HOGS}; n=$((n+1)); done",
        ]
        if self.affinity_interval_s > 0 and self.hogs:
            parts.append(f"( {self.affinity_loop()} ) &")
        if self.hotplug:
            parts.append(f"( {self.hotplug_loop()} ) &")
        if self.migration_storm:
            parts.append(f"( {self.storm_loop()} ) &")
        if self.rt_churn:
            parts.append(f"( {self.rt_churn_loop()}; wait ) &")
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
