"""The case the runner-fault tests run in a pytest subprocess (not collected: no test_ name).

It marks each phase in $FAULTS_MARKS so the outer test knows when to send its signal, and
ends in a sysrq panic so there is a dump to interrupt.
"""

import os
from pathlib import Path

import pytest

MARKS = Path(os.environ.get("FAULTS_MARKS", "/nonexistent"))


@pytest.mark.reprolab(
    kernel="stock",
    guest={"vcpus": 1, "memory": "256M", "image": "minimal"},
    expect={"title": "kernel panic: sysrq triggered crash"},
    mode="reproduce",
    dump="elf",  # the runner is killed while this dump is written: the raw one takes longest
)
def test_fault_case(guest):
    (MARKS / "scenario").touch()
    guest.wait(float(os.environ.get("FAULTS_SCENARIO_SECONDS", "3")))
    guest.console.send("echo c > /proc/sysrq-trigger")
    guest.wait(60)
