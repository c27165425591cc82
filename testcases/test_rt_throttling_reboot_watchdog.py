"""Field bug: a reboot hangs, "sched: RT throttling activated" is the last console line, and
the hardware watchdog resets the box 30 s later.

Seen on 3.0.101-based (SLES 11 SP3) boxes running pinned SCHED_FIFO workers. Mechanism: the
hogs run out of their RT bandwidth once (the throttling line), and then, under
RT_RUNTIME_SHARE (the default before Linux 5.1), a hog whose neighbours leave RT runtime
unused borrows it until its CPU is never throttled again. Nothing else then runs on that CPU:
not its kworkers, and not the rebooting task, which ``kernel_restart`` ->
``migrate_to_reboot_cpu`` pins to the reboot CPU (CPU 0). The reboot never reaches
``machine_restart`` and only the hardware watchdog ends it. Here the watchdog is QEMU's
i6300esb with the action ``pause``, so the guest is dumped at the moment the box would reset.
Linux 6.12 no longer does this: RT_RUNTIME_SHARE is off, and the fair deadline server gives
CFS tasks 50 ms a second under any RT load.

Cases:

* ``test_rt_starved_reboot_fires_the_watchdog_field_kernel`` (positive control) runs on 6.12
  with ``testcases/patches`` (RT_RUNTIME_SHARE semantics and no fair server while
  ``sched_field_rt`` is on). Hogs on every CPU at the DEFAULT bandwidth (950 ms in 1 s) hit
  the throttle; the one off CPU 0 finishes; CPU 0's borrows the rest; the shutdown stops the
  watchdog feeder and calls reboot(2) (``reboot -f``; busybox init's own reboot would SIGKILL
  the hogs first, which a field RT application in the kernel's way does not let happen) and
  the watchdog fires. Nothing writes ``sched_rt_runtime_us``.
* ``test_rt_reboot_finishes_with_mechanism_off_field_kernel`` (negative control): the same
  kernel and load with ``sched_field_rt=0`` must reboot.
* ``test_rt_hogs_with_bandwidth_limit_let_reboot_finish`` is the regression check on the
  stock kernel: with the default RT bandwidth the hogs must not stop busybox init's reboot.
* ``test_rt_load_outlasts_the_watchdog_in_systemd_shutdown`` is the field box's own setup, a
  systemd disk image on the stock kernel: the hogs keep their default RT bandwidth but ignore
  SIGTERM, so systemd's shutdown crawls on the 5% left to it, waits on its stop jobs, and the
  30 s watchdog (whose feeder the shutdown killed) fires before ``machine_restart``
  (measured here: throttling at 37 s, the watchdog at 88 s). It is the same signature
  without any kernel bug: the watchdog must outlast the worst shutdown under RT load.

Both field-kernel cases boot with ``watchdog.stop_on_reboot=0``: 6.12's watchdog core stops
the i6300esb from its reboot notifier, which a box's hardware watchdog does not do.
"""


import pytest
from fieldkernel import FIELD_KERNEL

from reprolab.scenario import RebootUnderLoad, RtHog
from reprolab.scenario.base import kill_detached
from reprolab.scenario.needs import built_kernel_missing
from reprolab.scenario.reboot import FEEDER

#: The virtual hardware watchdog pauses the domain when it fires, so it can be dumped.
WATCHDOG = {"model": "i6300esb", "action": "pause"}
GUEST = {"vcpus": 2, "memory": "512M", "image": "tools", "watchdog": WATCHDOG}
SIGNATURE = {"events": ["rt-throttling", "watchdog-fire"]}

_field_missing = built_kernel_missing(FIELD_KERNEL)
#: Hogs on every CPU at the default bandwidth; all but CPU 0's end after 3 s.
FIELD_REBOOT = RebootUnderLoad(
    load=RtHog(cpus=None, ignore_sigterm=True, stop_after_s=3, keep_cpus=(0,)),
    watchdog_timeout_s=10, feed_interval_s=2, load_s=6,
    reboot_command=f"{kill_detached(FEEDER)}; reboot -f",
)
FIELD_CMDLINE = {**FIELD_REBOOT.cmdline(), "watchdog.stop_on_reboot": 0,
                 "sched_field_cfsb": 0, "sched_field_rqlock": 0}


@pytest.mark.skipif(_field_missing is not None, reason=_field_missing or "")
@pytest.mark.reprolab(kernel=FIELD_KERNEL, guest=GUEST,
                      cmdline={**FIELD_CMDLINE, "sched_field_rt": 1},
                      expect=SIGNATURE, mode="reproduce", attempts=5, boot_timeout=120)
def test_rt_starved_reboot_fires_the_watchdog_field_kernel(guest):
    assert guest.sh("cat /sys/module/kernel/parameters/sched_field_rt").strip() == "Y"
    outcome = FIELD_REBOOT.run_reboot(guest, timeout=90)
    assert outcome == "watchdog-fire", f"the reboot {outcome} instead of hanging"


@pytest.mark.skipif(_field_missing is not None, reason=_field_missing or "")
@pytest.mark.reprolab(kernel=FIELD_KERNEL, guest=GUEST,
                      cmdline={**FIELD_CMDLINE, "sched_field_rt": 0},
                      expect=SIGNATURE, mode="regression", attempts=5, boot_timeout=120)
def test_rt_reboot_finishes_with_mechanism_off_field_kernel(guest):
    assert guest.sh("cat /sys/module/kernel/parameters/sched_field_rt").strip() == "N"
    outcome = FIELD_REBOOT.run_reboot(guest, timeout=90)
    assert guest.seen("rt-throttling"), "the hogs never hit the RT bandwidth limit"
    assert outcome == "rebooted", f"the reboot under RT load ended as {outcome}"


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
