"""A wide, deep cgroup tree under tight CFS bandwidth, busy in every leaf, quotas churning.

Field bug: "NMI watchdog: Watchdog detected hard LOCKUP", RIP in ``tg_unthrottle_up``, on
3.10-based kernels with thousands of cgroups. Unthrottling a cfs_rq walks the task-group tree
below it (``walk_tg_tree_from(..., tg_unthrottle_up, ...)``) with the runqueue lock held and
interrupts off; the period timer unthrottles every throttled group of every CPU each period,
and rewriting a quota (``tg_set_cfs_bandwidth``) unthrottles all of a group's cfs_rqs at once.
Small periods make the sweeps frequent, a wide and deep tree makes each one long, busy leaves
keep the groups throttled, and the churn adds the quota-change path on top.

The storm's root group holds a quota that never binds (:data:`KEY_HOLD_CPUS` CPUs' worth),
so a flip of every group to ``max`` never drops the last bandwidth user: the field box's
thousands of limited groups never did either. Without it each flip toggles the
``cfs_bandwidth_used`` static key, live-patching ``update_curr``, the scheduler's hottest
path, ten times a second; under TCG that self-modifying code thrashed QEMU's translation
cache: measured on the stock 6.1 kernel on a loaded host, a 2-vCPU guest advanced 10 s of
its own clock in 230 s of wall time, both vCPUs at 100% in ``asm_exc_int3`` at
``cfs_bandwidth_used`` (text_poke_bp) and SSH unanswered: a harness artefact, not the bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from reprolab.scenario.base import (
    STATE_DIR,
    GuestLike,
    Scenario,
    detached,
    read_int,
    require,
)

ROOT_NAME = "rl_storm"
GROUPS = f"{STATE_DIR}/cfs_storm.groups"
LEAVES = f"{STATE_DIR}/cfs_storm.leaves"
MAX_GROUPS = 20_000
#: The storm root's quota, in periods per period: never binds, keeps the static key on.
KEY_HOLD_CPUS = 1024
CgroupVersion = Literal["auto", "v1", "v2"]


@dataclass(frozen=True)
class CfsBandwidthStorm(Scenario):
    name: ClassVar[str] = "cfs_storm"

    #: Children per group.
    width: int = 4
    #: Levels below the storm's root group (leaves are at this depth).
    depth: int = 3
    #: Quota and period of every group (cpu.max "QUOTA PERIOD" / cfs_quota_us, cfs_period_us).
    quota_us: int = 1000
    period_us: int = 10_000
    #: Busy loops per leaf.
    tasks_per_leaf: int = 1
    #: Seconds between quota flips (max, then back to quota_us); 0 disables the churn.
    churn_interval_s: float = 0.2
    cgroup: CgroupVersion = "auto"

    def __post_init__(self) -> None:
        where = "cfs_bandwidth_storm"
        require(1 <= self.width <= 1000, where, f"width must be 1..1000, got {self.width}")
        require(1 <= self.depth <= 32, where, f"depth must be 1..32, got {self.depth}")
        require(self.groups <= MAX_GROUPS, where,
                f"width {self.width} and depth {self.depth} make {self.groups} groups, more "
                f"than {MAX_GROUPS}")
        # The kernel's own limits (tg_set_cfs_bandwidth): 1 ms <= period <= 1 s, quota >= 1 ms.
        require(1000 <= self.period_us <= 1_000_000, where,
                f"period_us must be 1000..1000000, got {self.period_us}")
        require(self.quota_us >= 1000, where, f"quota_us must be at least 1000, got "
                f"{self.quota_us}")
        require(0 <= self.tasks_per_leaf <= 16, where,
                f"tasks_per_leaf must be 0..16, got {self.tasks_per_leaf}")
        require(self.churn_interval_s >= 0, where, "churn_interval_s must not be negative")
        require(self.cgroup in ("auto", "v1", "v2"), where,
                f"cgroup must be auto, v1 or v2, got {self.cgroup!r}")

    @property
    def groups(self) -> int:
        return sum(self.width ** level for level in range(1, self.depth + 1))

    @property
    def leaves(self) -> int:
        return int(self.width ** self.depth)

    def _detect(self) -> str:
        """Shell that sets V (1 or 2) and R (the storm's root group)."""
        v2 = "V=2; R=/sys/fs/cgroup/" + ROOT_NAME
        v1 = "V=1; R=/sys/fs/cgroup/cpu/" + ROOT_NAME
        if self.cgroup == "v2":
            return v2
        if self.cgroup == "v1":
            return v1
        return f"if [ -f /sys/fs/cgroup/cgroup.controllers ]; then {v2}; else {v1}; fi"

    def _setq(self) -> str:
        """``setq GROUP QUOTA``: QUOTA is a number of microseconds or ``max``."""
        return (
            "setq() { if [ $V = 2 ]; then echo \"$2 " + str(self.period_us) + "\" > $1/cpu.max; "
            "else echo " + str(self.period_us) + " > $1/cpu.cfs_period_us; "
            "if [ $2 = max ]; then echo -1 > $1/cpu.cfs_quota_us; "
            "else echo $2 > $1/cpu.cfs_quota_us; fi; fi; }"
        )

    def setup_script(self) -> str:
        # A recursive builder: ash has ``local``, and depth is small. On v2 the cpu
        # controller must be enabled in every non-leaf group's subtree_control.
        return (
            f"set -e; {self._detect()}; {self._setq()}; mkdir -p {STATE_DIR}; "
            f": > {GROUPS}; : > {LEAVES}; "
            "if [ $V = 2 ]; then echo +cpu > /sys/fs/cgroup/cgroup.subtree_control; fi; "
            f"mkdir -p $R; setq $R {self.period_us * KEY_HOLD_CPUS}; "
            "mk() { local d=$1 l=$2 i=0; "
            f"if [ $l -ge {self.depth} ]; then echo $d >> {LEAVES}; return 0; fi; "
            "if [ $V = 2 ]; then echo +cpu > $d/cgroup.subtree_control; fi; "
            f"while [ $i -lt {self.width} ]; do mkdir $d/g$i; setq $d/g$i {self.quota_us}; "
            f"echo $d/g$i >> {GROUPS}; mk $d/g$i $((l+1)); i=$((i+1)); done; }}; "
            f"mk $R 0; wc -l < {GROUPS}"
        )

    def inject_script(self) -> str:
        busy = (
            f"for leaf in $(cat {LEAVES}); do n=0; while [ $n -lt {self.tasks_per_leaf} ]; do "
            "sh -c 'echo $$ > $0/cgroup.procs && while :; do :; done' $leaf & "
            "n=$((n+1)); done; done"
        )
        script = f"{self._detect()}; {self._setq()}; {busy}; "
        if self.churn_interval_s > 0:
            script += (
                f"while :; do for g in $(cat {GROUPS}); do setq $g max; done; "
                f"sleep {self.churn_interval_s}; "
                f"for g in $(cat {GROUPS}); do setq $g {self.quota_us}; done; "
                f"sleep {self.churn_interval_s}; done"
            )
        else:
            script += "wait"
        return detached(self.name, script)

    def cleanup_script(self) -> str:
        # Killed tasks leave their cgroups a moment later; rmdir deepest first, a few tries.
        return (
            f"{self._detect()}; [ -d $R ] || exit 0; for try in 1 2 3 4 5 6 7 8 9 10; do "
            "find $R -depth -type d -exec rmdir {} \\; 2>/dev/null; [ -d $R ] || break; "
            f"sleep 0.5; done; rm -f {GROUPS} {LEAVES}; [ ! -d $R ]"
        )

    def throttled_script(self) -> str:
        return (
            f"s=0; for g in $(cat {GROUPS}); do "
            "n=$(sed -n 's/^nr_throttled //p' $g/cpu.stat); s=$((s + ${n:-0})); done; echo $s"
        )

    def nr_throttled(self, guest: GuestLike) -> int:
        """Sum of ``nr_throttled`` over the storm's groups: proof the quotas bit."""
        return read_int(guest, self.throttled_script(), timeout=120.0)
