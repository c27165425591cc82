"""Kernel hang-detector thresholds ordered so that one hang is reported once, by the best witness.

A hang trips several detectors in turn. The harness wants the most specific report first and
must not give up ("no output") before the slowest relevant detector had its say:

1. hard lockup (NMI/buddy watchdog) at ``watchdog_thresh``: interrupts are off, nothing else
   on that CPU can report, and the NMI stack shows exactly where it spins;
2. RCU CPU stall at ``rcu_cpu_stall_timeout``: a CPU not passing through a quiescent state,
   reported with the stuck CPU's stack while the loop is still running;
3. soft lockup at ``2 * watchdog_thresh``: same loop, seen later by the per-CPU watchdog
   thread; placing it after the RCU stall avoids two reports of one loop;
4. hung task at ``hung_task_timeout_secs`` (checked every ``hung_task_check_interval_secs``):
   a task in D state, usually a victim waiting on one of the above;
5. the harness's own no-output timeout, after the hung-task detector's worst case, so silence
   means the guest is truly wedged (not just slow to report).

These are guest command-line parameters, so they live with the guest spec; the harness's
own timeout is a separate value of the plan (:attr:`WatchdogPlan.no_output_s`), never a key
mixed into the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from reprolab.errors import UserError

#: The kernel clamps the RCU stall timeout to [3, 300] seconds and watchdog_thresh to [1, 60].
RCU_MIN_S, RCU_MAX_S = 3, 300
THRESH_MIN_S, THRESH_MAX_S = 1, 60
MIN_BUDGET_S = 20
RCU_ORDER_CAP_S = 80


@dataclass(frozen=True)
class WatchdogPlan:
    rcu_stall_s: int
    watchdog_thresh_s: int
    hung_task_s: int
    hung_task_check_s: int
    no_output_s: int

    @property
    def hard_lockup_s(self) -> int:
        return self.watchdog_thresh_s

    @property
    def soft_lockup_s(self) -> int:
        return 2 * self.watchdog_thresh_s

    def kernel_params(self) -> dict[str, str]:
        return {
            "rcupdate.rcu_cpu_stall_timeout": str(self.rcu_stall_s),
            "watchdog_thresh": str(self.watchdog_thresh_s),
            "sysctl.kernel.hung_task_timeout_secs": str(self.hung_task_s),
            "sysctl.kernel.hung_task_check_interval_secs": str(self.hung_task_check_s),
        }


def watchdog_plan(hang_budget_s: int) -> WatchdogPlan:
    """Thresholds that report a hang within ``hang_budget_s`` seconds, each detector in turn.

    The budget is split so every stage has a margin over the previous one: TCG guests run
    timers unevenly, and two detectors firing within a second of each other race on the
    console. The no-output timeout is the budget itself.
    """
    if hang_budget_s < MIN_BUDGET_S:
        raise UserError(
            f"hang budget {hang_budget_s}s is too short: give at least {MIN_BUDGET_S}s so the "
            "RCU, soft-lockup and hung-task detectors can fire in order"
        )
    # Capped so that the soft lockup (at most 2 * 60 s) still comes after the RCU stall.
    rcu = max(RCU_MIN_S, min(RCU_MAX_S, RCU_ORDER_CAP_S, hang_budget_s // 6))
    margin = max(2, rcu // 2)
    # Soft lockup (2*thresh) must come after the RCU stall by at least the margin.
    thresh = max(THRESH_MIN_S, min(THRESH_MAX_S, -(-(rcu + margin) // 2)))
    soft = 2 * thresh
    # khungtaskd reports a task between timeout and timeout + check interval after it blocks.
    check = max(1, min(10, rcu // 2))
    hung = max(soft + margin, hang_budget_s // 2)
    no_output = max(hang_budget_s, hung + check + margin)
    return WatchdogPlan(rcu, thresh, hung, check, no_output)


def kernel_cmdline(hang_budget_s: int) -> dict[str, str]:
    """Kernel command-line parameters for :func:`watchdog_plan` (the harness's own silence
    timeout is :attr:`WatchdogPlan.no_output_s`)."""
    return watchdog_plan(hang_budget_s).kernel_params()
