"""Smoke case: a panic forced through sysrq is seen, titled, dumped and judged.

Not a field bug but the harness's own proof of life: if this case does not reproduce, no
other verdict of the run can be trusted. ``echo c > /proc/sysrq-trigger`` calls
``sysrq_handle_crash``, which panics with "sysrq triggered crash" on every kernel since 2.6;
with pvpanic loaded libvirt also sees the guest crash and preserves it for the dump.
"""

import pytest


@pytest.mark.reprolab(
    kernel="stock",
    guest={"vcpus": 1, "memory": "512M", "image": "minimal"},
    expect={"title": "kernel panic: sysrq triggered crash"},
    mode="reproduce",
)
def test_sysrq_panic(guest):
    guest.console.send("echo c > /proc/sysrq-trigger")
    guest.wait(seconds=60)
