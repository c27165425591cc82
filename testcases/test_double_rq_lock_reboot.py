"""Field bug: tasks blocked in ``double_rq_lock`` called from the balancing paths while the box
reboots; the reboot never completes.

Seen on 3.x kernels under heavy, affinity-bound load. Mechanism: two CPUs each hold their own
runqueue lock and want the other's (an ordering slip in a path that takes two runqueue
locks), so both spin with interrupts off: ABBA. Neither answers the reboot's stop IPI; x86
reboot (``native_stop_other_cpus``) then falls back to an NMI and does not wait for them to
go offline (it never offlines CPUs), so what hangs is whatever still needs one of the two
CPUs: the rebooting task itself, once ``migrate_to_reboot_cpu`` pins it to CPU 0, or any
work queued there. On 6.12 every double lock orders the two runqueues (``double_rq_lock``
sorts them, ``_double_lock_balance`` only spins on a lock later in that order), so the slip
cannot happen there.

Cases:

* ``test_double_rq_lock_during_reboot`` is the regression check on the stock kernel: the
  load_balance_stress scenario (hogs, affinity churn, a storm of short pinned tasks, CPU
  hotplug cycles) and a reboot in the middle of it, with a hardware watchdog armed; the
  reboot must complete (a silent hang ends in the watchdog firing: a crash result).
* ``test_double_rq_lock_deadlock_field_kernel`` (positive control) runs 6.12 with
  ``testcases/patches``, where ``sched_field_rqlock`` makes ``double_rq_lock`` take the
  locks in the caller's order; the same load plus RT churn (unpinned SCHED_FIFO tasks that
  push and pull each other between runqueues through ``double_lock_balance``) and the
  reboot. Three vCPUs: the two deadlocked CPUs are blind, the third one's buddy
  hard-lockup detector reports them. Reproduced: a hard lockup with ``double_rq_lock`` in
  the stack.
* ``test_double_rq_lock_mechanism_off_field_kernel`` (negative control): the same kernel and
  load with ``sched_field_rqlock=0`` must reboot.
"""


import pytest
from fieldkernel import FIELD_KERNEL

from reprolab.scenario import LoadBalanceStress, RebootUnderLoad
from reprolab.scenario.needs import built_kernel_missing

WATCHDOG = {"model": "i6300esb", "action": "pause"}

_field_missing = built_kernel_missing(FIELD_KERNEL)
FIELD_REBOOT = RebootUnderLoad(
    load=LoadBalanceStress(hogs=6, affinity_interval_s=0.05, hotplug_interval_s=0.2,
                           rt_churn=6, cpus=(0, 1)),
    watchdog_timeout_s=30, feed_interval_s=5, load_s=20,
)
FIELD_GUEST = {"vcpus": 3, "memory": "512M", "image": "tools", "watchdog": WATCHDOG}
#: isolcpus=2 and the load kept on CPUs 0-1: CPU 2 is in no root domain with them, so RT
#: push/pull and the balancer never take its lock or theirs from it; it stays the witness.
FIELD_CMDLINE = {**FIELD_REBOOT.cmdline(), "watchdog_thresh": 2, "nmi_watchdog": "panic",
                 "isolcpus": 2,
                 "hardlockup_all_cpu_backtrace": 1, "sched_field_rqlock_window_us": 200,
                 "sched_field_cfsb": 0, "sched_field_rt": 0}
FIELD_SIGNATURE = {"kind": "hard-lockup", "in_stack": "double_rq_lock"}


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


@pytest.mark.skipif(_field_missing is not None, reason=_field_missing or "")
@pytest.mark.reprolab(kernel=FIELD_KERNEL, guest=FIELD_GUEST,
                      cmdline={**FIELD_CMDLINE, "sched_field_rqlock": 1},
                      expect=FIELD_SIGNATURE, mode="reproduce", attempts=5, boot_timeout=120)
def test_double_rq_lock_deadlock_field_kernel(guest):
    assert guest.sh("cat /sys/module/kernel/parameters/sched_field_rqlock").strip() == "Y"
    outcome = FIELD_REBOOT.run_reboot(guest, timeout=150)
    # Reproduced is decided by the signature; a reboot that went through is worth saying.
    assert outcome != "rebooted", "the reboot under load completed: no deadlock"


@pytest.mark.skipif(_field_missing is not None, reason=_field_missing or "")
@pytest.mark.reprolab(kernel=FIELD_KERNEL, guest=FIELD_GUEST,
                      cmdline={**FIELD_CMDLINE, "sched_field_rqlock": 0},
                      expect=FIELD_SIGNATURE, mode="regression", attempts=5, boot_timeout=120)
def test_double_rq_lock_mechanism_off_field_kernel(guest):
    assert guest.sh("cat /sys/module/kernel/parameters/sched_field_rqlock").strip() == "N"
    outcome = FIELD_REBOOT.run_reboot(guest, timeout=150)
    assert outcome == "rebooted", f"the reboot under load ended as {outcome}"
