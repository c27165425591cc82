"""Field bug: tasks blocked in ``double_rq_lock`` called from ``load_balance`` while the box
reboots; the reboot never completes.

Seen on 3.10-based kernels under heavy, affinity-bound load. Mechanism: reboot takes the
secondary CPUs down (``migrate_tasks``/``sched_cpu_dying`` under the runqueue locks) while
the load balancer is pulling tasks between those same runqueues with ``double_rq_lock``; an
ordering slip between the two leaves a CPU spinning on a runqueue lock with interrupts off.
The load_balance_stress scenario keeps the balancer and every migration path busy (hogs,
affinity churn, a storm of short pinned tasks, CPU hotplug cycles) and reboot_under_load
reboots in the middle of it with a hardware watchdog armed.

Reproduced means: a lockup or hang report with ``double_rq_lock`` in the stack. The locking
was reworked long ago, so on a modern kernel this is a regression check; the body also
insists the reboot completes (a silent hang ends in the watchdog firing: a crash result).
"""

import pytest

from reprolab.scenario import LoadBalanceStress, RebootUnderLoad

WATCHDOG = {"model": "i6300esb", "action": "pause"}


@pytest.mark.reprolab(
    guest={"vcpus": 2, "memory": "512M", "image": "tools", "watchdog": WATCHDOG},
    cmdline={"watchdog_thresh": 5, "sysctl.kernel.hung_task_timeout_secs": 20},
    expect={"in_stack": "double_rq_lock"},
    mode="regression",
    boot_timeout=120,
)
def test_double_rq_lock_during_reboot(guest):
    stress = LoadBalanceStress(hogs=8, affinity_interval_s=0.05, hotplug_interval_s=0.2)
    reboot = RebootUnderLoad(load=stress, watchdog_timeout_s=30, feed_interval_s=5,
                             load_s=8)
    outcome = reboot.run_reboot(guest, timeout=150)
    assert outcome == "rebooted", f"the reboot under load ended as {outcome}"
