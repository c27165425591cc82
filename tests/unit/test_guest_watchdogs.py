"""Detector thresholds: one hang, reported once, by each detector in its turn."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprolab.errors import UserError
from reprolab.guest.watchdogs import kernel_cmdline, watchdog_plan


@given(st.integers(min_value=20, max_value=100_000))
def test_order_rcu_soft_hung_silence(budget: int) -> None:
    p = watchdog_plan(budget)
    assert 3 <= p.rcu_stall_s <= 300 and 1 <= p.watchdog_thresh_s <= 60
    assert p.rcu_stall_s < p.soft_lockup_s < p.hung_task_s
    assert p.hung_task_s + p.hung_task_check_s < p.no_output_s
    assert p.no_output_s >= budget


def test_cmdline_keys() -> None:
    params = kernel_cmdline(120)
    assert watchdog_plan(120).no_output_s == 120
    assert params == {
        "rcupdate.rcu_cpu_stall_timeout": "20",
        "watchdog_thresh": "15",
        "sysctl.kernel.hung_task_timeout_secs": "60",
        "sysctl.kernel.hung_task_check_interval_secs": "10",
    }


def test_too_small_budget_is_a_user_error() -> None:
    with pytest.raises(UserError, match="at least 20s"):
        watchdog_plan(5)
