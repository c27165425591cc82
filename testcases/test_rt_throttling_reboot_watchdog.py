"""Field bug: a reboot hangs, "sched: RT throttling activated" is the last console line, and
the hardware watchdog resets the box 30 s later.

Seen on 3.10-based kernels on boxes running pinned SCHED_FIFO workers. Mechanism: real-time
busy tasks outlive the shutdown's SIGTERM and, once their bandwidth limit no longer holds
them (RT throttling off, as RT-tuned boxes run with ``kernel.sched_rt_runtime_us = -1``, or
runtime borrowed from other CPUs under RT_RUNTIME_SHARE, the default before 5.1), take every
cycle: init and the watchdog feeder never run again, the reboot never reaches
``machine_restart``, and only the hardware watchdog ends it. Here the watchdog is QEMU's
i6300esb with the action ``pause``, so the guest is dumped at the moment the box would reset.

Two cases. ``test_rt_starved_reboot_fires_the_watchdog`` hunts the field signature (the RT
throttling line, then the watchdog firing) by driving the guest into that state; it passes
when the signature appears. ``test_rt_hogs_with_bandwidth_limit_let_reboot_finish`` is the
regression check: with the default RT bandwidth (950 ms in 1 s) the same hogs must not stop
the reboot; the watchdog firing fails it.

The first two run on the initramfs tools image (busybox init's shutdown: SIGTERM to all,
SIGKILL, reboot). ``test_rt_load_outlasts_the_watchdog_in_systemd_shutdown`` is the field
box's own setup, a systemd disk image: the hogs keep their default RT bandwidth (950 ms in 1
s) but ignore SIGTERM, so systemd's shutdown crawls on the 5% left to it, waits on its stop
jobs, and the 30 s watchdog (whose feeder the shutdown killed) fires before
``machine_restart`` (measured here: throttling at 37 s, the watchdog at 88 s). It is the same
signature without any kernel bug: the watchdog must outlast the worst shutdown under RT load.
"""

import pytest

from reprolab.scenario import RebootUnderLoad, RtHog

#: The virtual hardware watchdog pauses the domain when it fires, so it can be dumped.
WATCHDOG = {"model": "i6300esb", "action": "pause"}
GUEST = {"vcpus": 2, "memory": "512M", "image": "tools", "watchdog": WATCHDOG}
SIGNATURE = {"events": ["rt-throttling", "watchdog-fire"]}


@pytest.mark.reprolab(guest=GUEST, expect=SIGNATURE, mode="reproduce", boot_timeout=120)
def test_rt_starved_reboot_fires_the_watchdog(guest):
    reboot = RebootUnderLoad(
        load=RtHog(cpus=None, ignore_sigterm=True),
        watchdog_timeout_s=10, feed_interval_s=2, load_s=3,
        after_reboot="echo -1 > /proc/sys/kernel/sched_rt_runtime_us",
    )
    outcome = reboot.run_reboot(guest, timeout=90)
    assert outcome == "watchdog-fire", f"the reboot {outcome} instead of hanging"


@pytest.mark.reprolab(guest=GUEST, expect=SIGNATURE, mode="regression", boot_timeout=120)
def test_rt_hogs_with_bandwidth_limit_let_reboot_finish(guest):
    reboot = RebootUnderLoad(
        load=RtHog(cpus=None, ignore_sigterm=True),
        watchdog_timeout_s=10, feed_interval_s=2, load_s=3,
    )
    outcome = reboot.run_reboot(guest, timeout=90)
    assert guest.seen("rt-throttling"), "the hogs never hit the RT bandwidth limit"
    assert outcome == "rebooted", f"the reboot under RT load ended as {outcome}"


DISK_GUEST = {"vcpus": 2, "memory": "1G", "image": "tools-disk", "watchdog": WATCHDOG}


@pytest.mark.reprolab(guest=DISK_GUEST, expect=SIGNATURE, mode="reproduce", boot_timeout=240)
def test_rt_load_outlasts_the_watchdog_in_systemd_shutdown(guest):
    reboot = RebootUnderLoad(
        load=RtHog(cpus=None, ignore_sigterm=True),
        watchdog_timeout_s=30, feed_interval_s=5, load_s=3,
        reboot_command="systemctl reboot",
    )
    outcome = reboot.run_reboot(guest, timeout=180)
    assert outcome == "watchdog-fire", f"the reboot {outcome} instead of hanging"
