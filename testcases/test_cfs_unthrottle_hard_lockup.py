"""Field bug: "NMI watchdog: Watchdog detected hard LOCKUP on cpu N", RIP in tg_unthrottle_up.

Seen on 3.10.0-514-based (RHEL 7.3) kernels on boxes with thousands of cgroups under CFS
bandwidth control. Mechanism: unthrottling a cfs_rq walks the whole task-group subtree below
it (``walk_tg_tree_from(..., tg_unthrottle_up, ...)``) with the runqueue lock held and
interrupts off; the period timer does that for every throttled group each period, and a
quota write does it for all of a group's runqueues at once. A wide, deep tree with tiny
quotas, busy leaves and quota churn (the cfs_bandwidth_storm scenario) makes those walks
long and frequent; on the field kernel one outlasted the hard-lockup threshold.

Reproduced means: a hard lockup with ``tg_unthrottle_up`` in the stack. Upstream reworked the
walk (throttled lists, per-cfs_rq unthrottle), so on a modern kernel this is a regression
check: a hit fails the test. Detecting a hard lockup needs a hard-lockup detector: TCG
emulates no PMU, so the perf NMI detector never starts and the stock 6.1 kernel (which has
no buddy detector) cannot see one; the case runs on reprolab's 6.12 build, whose buddy
detector has each CPU watch its neighbour's timer interrupts.
"""

import pytest

from reprolab.scenario import CfsBandwidthStorm
from reprolab.scenario.needs import built_kernel_missing

KERNEL = "build:linux-source-6.12"
_missing = built_kernel_missing(KERNEL)
STORM = CfsBandwidthStorm(width=6, depth=3, quota_us=1000, period_us=1000,
                          churn_interval_s=0.1)


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
