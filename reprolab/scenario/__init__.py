"""Reusable ways to provoke kernel mechanisms in a guest (see :mod:`reprolab.scenario.base`).

Each scenario is a frozen dataclass of its parameters with four steps (setup, inject, stop,
cleanup) and ``run(guest, seconds)`` for all four around a watch of the guest.
"""

from reprolab.scenario.background import BackgroundLoad
from reprolab.scenario.base import GuestLike, Scenario
from reprolab.scenario.cfs_bandwidth import CfsBandwidthStorm
from reprolab.scenario.compose import Together
from reprolab.scenario.hung_task import HungTask
from reprolab.scenario.lkdtm import EXPECTED as LKDTM_EXPECTED
from reprolab.scenario.lkdtm import Lkdtm
from reprolab.scenario.load_balance import LoadBalanceStress
from reprolab.scenario.nested_kvm import ClockReport, NestedKvm, clock_report
from reprolab.scenario.reboot import RebootUnderLoad
from reprolab.scenario.rt_hog import RtHog

__all__ = [
    "LKDTM_EXPECTED", "BackgroundLoad", "CfsBandwidthStorm", "ClockReport", "GuestLike",
    "HungTask", "Lkdtm", "LoadBalanceStress", "NestedKvm", "RebootUnderLoad", "RtHog",
    "Scenario", "Together", "clock_report",
]
