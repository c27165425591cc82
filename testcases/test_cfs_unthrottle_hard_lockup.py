"""Field bug: "NMI watchdog: Watchdog detected hard LOCKUP on cpu N", RIP in tg_unthrottle_up.

Seen on 3.10.0-514-based (RHEL 7.3) kernels on boxes with thousands of cgroups under CFS
bandwidth control. Mechanism: unthrottling a cfs_rq walks the whole task-group subtree below
it (``walk_tg_tree_from(..., tg_unthrottle_up, ...)``) with the runqueue lock held and
interrupts off; the period timer does that for every throttled group each period, and a
quota write does it for all of a group's runqueues at once. Linux 6.12 still has that walk
under the lock; what keeps it from wedging a CPU today is that remote cfs_rqs are unthrottled
asynchronously on their own CPU, the period timer's loop is bounded (it scales the period up
when it keeps overrunning) and real trees are walked in microseconds.

Three cases:

* ``test_cfs_unthrottle_hard_lockup`` is the regression check on reprolab's unpatched 6.12
  build: a wide tree with tiny quotas, busy leaves and quota churn (the cfs_bandwidth_storm
  scenario) must not hard-lock it.
* ``test_cfs_unthrottle_hard_lockup_field_kernel`` is the positive control: the same storm
  on 6.12 with ``testcases/patches`` (the field mechanism back: synchronous remote unthrottle
  under the rq lock, the timer loop without bound or scale-up, and a per-node cost
  ``sched_field_cfsb_node_us`` standing for the field box's thousands of groups). It must
  reproduce the field signature: a hard lockup with ``tg_unthrottle_up`` in the stack.
* ``test_cfs_unthrottle_mechanism_off_field_kernel`` is the negative control: the same
  patched kernel booted with ``sched_field_cfsb=0`` must survive the same storm.

Detecting a hard lockup needs a hard-lockup detector: TCG emulates no PMU, so the perf NMI
detector never starts; reprolab's 6.12 build has the buddy detector, where each CPU watches
its neighbour's timer interrupts. The walking CPU holds another CPU's runqueue lock, and that
CPU spins on it with interrupts off too, so the patched cases run three vCPUs with
``isolcpus=2``: kept out of load balancing, CPU 2 takes no other runqueue's lock, stays
healthy and reports; ``hardlockup_all_cpu_backtrace`` prints every CPU's stack. Measured
without the isolation: all three vCPUs wedged ("hrtimer: interrupt took 11229811780 ns",
soft lockups only) and no hard lockup was reported.
"""


import pytest
from fieldkernel import FIELD_KERNEL

from reprolab.scenario import CfsBandwidthStorm
from reprolab.scenario.needs import built_kernel_missing

KERNEL = "build:linux-source-6.12"
#: 6.12 with every field-bug patch (one kernel for all field-bug cases).
#: On the field kernel, switch off the mechanisms this file does not test.
OTHER_BUGS_OFF = {"sched_field_rt": 0, "sched_field_rqlock": 0}
_missing = built_kernel_missing(KERNEL)
_field_missing = built_kernel_missing(FIELD_KERNEL)
STORM = CfsBandwidthStorm(width=6, depth=3, quota_us=1000, period_us=1000,
                          churn_interval_s=0.1)
#: Smaller, so a TCG guest sets it up quickly; the per-node cost stands for the width.
#: No quota churn: quota writes walk from process context on any CPU and drag every CPU
#: into the stall (measured: all three wedged, nothing reported); the period timer alone
#: walks from its hard irq on one CPU.
FIELD_STORM = CfsBandwidthStorm(width=4, depth=2, quota_us=5000, period_us=10_000,
                                churn_interval_s=0)
FIELD_GUEST = {"vcpus": 3, "memory": "512M", "image": "tools"}
#: isolcpus=2 keeps CPU 2 out of load balancing, so it takes no other runqueue's lock and
#: stays a healthy witness for the buddy detector.
#: nosoftlockup: the field report is a hard lockup, and with watchdog_thresh=1 (soft-lockup
#: threshold 2 s) the idle witness itself was reported "soft lockup - CPU#2 stuck for 7s"
#: in pv_native_safe_halt in 1 of 5 attempts under TCG on a loaded host, before the hard
#: lockup (bench/results/field_bugs.json). The buddy hard-lockup check runs from the same
#: per-CPU hrtimer, which nosoftlockup leaves running; a hang still ends in the NMI capture.
FIELD_CMDLINE = {"watchdog_thresh": 1, "nmi_watchdog": "panic", "isolcpus": 2,
                 "nosoftlockup": None, "hardlockup_all_cpu_backtrace": 1, **OTHER_BUGS_OFF}
#: What the field report says: a hard lockup, the unthrottle walk on the stuck CPU's stack.
FIELD_SIGNATURE = {"kind": "hard-lockup", "title": "BUG: hard lockup in .*",
                   "in_stack": "tg_unthrottle_up"}


@pytest.mark.skipif(_missing is not None, reason=_missing or "")
@pytest.mark.reprolab(
    kernel=KERNEL,
    guest={"vcpus": 2, "memory": "1G", "image": "tools"},
    cmdline={"watchdog_thresh": 5, "nmi_watchdog": "panic"},
    expect={"kind": "hard-lockup", "in_stack": "tg_unthrottle_up"},
    mode="regression",
)
def test_cfs_unthrottle_hard_lockup(guest):
    STORM.setup(guest)
    STORM.inject(guest)
    guest.wait(30)
    # The storm must really have throttled, or "not reproduced" would mean nothing.
    assert STORM.nr_throttled(guest) > 0
    STORM.stop(guest)
    STORM.cleanup(guest)


def knob(guest, name):
    """A field-bug knob as the running kernel has it (Y/N, or a number)."""
    return guest.sh(f"cat /sys/module/kernel/parameters/{name}").strip()


def _field_storm(guest, mechanism):
    # A misspelt knob would be ignored by the kernel and make either control meaningless.
    assert knob(guest, "sched_field_cfsb") == mechanism
    FIELD_STORM.setup(guest)
    FIELD_STORM.inject(guest)
    guest.wait(40)
    assert FIELD_STORM.nr_throttled(guest) > 0, "the storm never throttled a group"
    FIELD_STORM.stop(guest)
    FIELD_STORM.cleanup(guest)


@pytest.mark.skipif(_field_missing is not None, reason=_field_missing or "")
@pytest.mark.reprolab(
    kernel=FIELD_KERNEL,
    guest=FIELD_GUEST,
    cmdline={**FIELD_CMDLINE, "sched_field_cfsb": 1, "sched_field_cfsb_node_us": 1_000_000},
    expect=FIELD_SIGNATURE,
    mode="reproduce",
    attempts=5,
)
def test_cfs_unthrottle_hard_lockup_field_kernel(guest):
    _field_storm(guest, "Y")


@pytest.mark.skipif(_field_missing is not None, reason=_field_missing or "")
@pytest.mark.reprolab(
    kernel=FIELD_KERNEL,
    guest=FIELD_GUEST,
    cmdline={**FIELD_CMDLINE, "sched_field_cfsb": 0, "sched_field_cfsb_node_us": 1_000_000},
    expect=FIELD_SIGNATURE,
    mode="regression",
    attempts=5,
)
def test_cfs_unthrottle_mechanism_off_field_kernel(guest):
    _field_storm(guest, "N")
