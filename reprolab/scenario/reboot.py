"""Reboot while another scenario loads the guest, with a hardware watchdog armed.

Field bug: the box is asked to reboot, the last console line is "sched: RT throttling
activated", nothing else is printed and the hardware watchdog resets the box 30 s later.
Here the watchdog is QEMU's i6300esb with libvirt's action ``pause``: when the guest stops
feeding it, libvirt pauses the domain, the harness records a fatal ``watchdog-fire`` event
and dumps memory at that moment, with the hung reboot path still in it.

The watchdog is armed the way a server's is: ``nowayout`` (closing the device, as the
shutdown's kill-everything step does to the feeder, does not stop it) and fed from
userspace every ``feed_interval_s``. A reboot that completes resets the device with the
machine; one that hangs lets it fire. :meth:`RebootUnderLoad.wait_outcome` tells the two apart.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from reprolab.detect.events import WATCHDOG_FIRE
from reprolab.detect.kinds import REBOOT
from reprolab.scenario.base import (
    STATE_DIR,
    GuestLike,
    Scenario,
    best_effort,
    detached,
    kill_detached,
    one_line,
    require,
)

FEEDER = "watchdog_feeder"
#: What the kernel prints when it really restarts (kernel_restart -> machine_restart).
RESTARTING = re.compile(r"reboot: Restarting system|Restarting system\.")
Outcome = Literal["rebooted", "watchdog-fire", "crash", "hung"]


@dataclass(frozen=True)
class RebootUnderLoad(Scenario):
    name: ClassVar[str] = "reboot_under_load"

    #: The load running when the reboot is asked for (None: an idle reboot).
    load: Scenario | None = None
    #: Watchdog timeout (the field box's hardware watchdog: 30 s).
    watchdog_timeout_s: int = 30
    feed_interval_s: int = 5
    #: Seconds the load runs before the reboot is asked for.
    load_s: float = 2.0
    #: Shell run just before the reboot (say, a knob flipped as the field box had it).
    before_reboot: str = ""
    reboot_command: str = "reboot"
    #: Shell run right after the reboot is asked for, while the shutdown is in flight.
    after_reboot: str = ""

    def __post_init__(self) -> None:
        where = "reboot_under_load"
        require(1 <= self.watchdog_timeout_s <= 600, where,
                f"watchdog_timeout_s must be 1..600, got {self.watchdog_timeout_s}")
        require(1 <= self.feed_interval_s < self.watchdog_timeout_s, where,
                f"feed_interval_s must be 1..watchdog_timeout_s-1, got {self.feed_interval_s}")
        require(self.load_s >= 0, where, "load_s must not be negative")
        require(bool(self.reboot_command.strip()), where, "reboot_command must not be empty")
        require(self.load is None or not isinstance(self.load, RebootUnderLoad), where,
                "the load cannot itself be a reboot")

    def cmdline(self) -> dict[str, Any]:
        """Parameters for a kernel with i6300esb built in (module options cannot change)."""
        return {"i6300esb.heartbeat": self.watchdog_timeout_s, "i6300esb.nowayout": 1}

    def arm_script(self) -> str:
        """Reload i6300esb with nowayout and the timeout; keep systemd off the device."""
        t = self.watchdog_timeout_s
        return (
            f"mkdir -p {STATE_DIR}; "
            "if [ -f /sys/module/i6300esb/initstate ]; then modprobe -r i6300esb; fi; "
            "if [ ! -d /sys/module/i6300esb ]; then "
            f"modprobe i6300esb heartbeat={t} nowayout=1 || exit 1; fi; "
            "for i in 1 2 3 4 5 6 7 8 9 10; do [ -c /dev/watchdog ] && break; sleep 0.2; done; "
            "[ -c /dev/watchdog ] || { echo 'no /dev/watchdog (i6300esb)' >&2; exit 1; }; "
            # systemd would take the device over at shutdown with its own 10 min timeout.
            "if [ -d /run/systemd/system ]; then mkdir -p /run/systemd/system.conf.d && "
            "printf '[Manager]\\nRuntimeWatchdogSec=0\\nRebootWatchdogSec=0\\n' "
            "> /run/systemd/system.conf.d/reprolab-watchdog.conf && systemctl daemon-reexec; fi"
        )

    def feeder(self) -> str:
        """Busybox's watchdog when there is one (it sets the timeout), else a shell loop."""
        t, f = self.watchdog_timeout_s, self.feed_interval_s
        return (
            "if busybox watchdog --help >/dev/null 2>&1 || busybox 2>&1 | grep -qw watchdog; "
            f"then exec busybox watchdog -F -T {t} -t {f} /dev/watchdog; fi; "
            f"exec 3>/dev/watchdog; while :; do printf 1 >&3; sleep {f}; done"
        )

    def setup(self, guest: GuestLike) -> None:
        if self.load is not None:
            self.load.setup(guest)
        guest.sh(one_line(self.arm_script()), timeout=120.0)
        guest.sh(one_line(detached(FEEDER, self.feeder())))

    def reboot_script(self) -> str:
        pre = f"{self.before_reboot.rstrip('; ')}; " if self.before_reboot.strip() else ""
        post = f"; {self.after_reboot.rstrip('; ')}" if self.after_reboot.strip() else ""
        # The launcher ignores SIGTERM so that the shutdown's kill step does not cut short
        # what it still has to do after asking for the reboot.
        return detached(self.name, f"trap '' TERM; sleep {self.load_s}; {pre}"
                                   f"{self.reboot_command}{post}")

    def inject(self, guest: GuestLike) -> None:
        if self.load is not None:
            self.load.inject(guest)
        guest.sh(one_line(self.reboot_script()))

    def stop(self, guest: GuestLike) -> None:
        # After a reboot the guest-side state is gone; before one, stop the load only. The
        # feeder stays: with nowayout the watchdog cannot be stopped, only starved.
        if self.load is not None:
            self.load.stop(guest)

    def cleanup(self, guest: GuestLike) -> None:
        if self.load is not None:
            self.load.cleanup(guest)
        best_effort(guest, kill_detached(self.name))

    def wait_outcome(self, guest: Any, timeout: float, *, since: int = 0) -> Outcome:
        """After :meth:`inject`: did the reboot complete, the watchdog fire, the guest crash?

        ``guest`` is a :class:`~reprolab.guest.handle.Guest` (the restart line is read from
        its console, from offset ``since``). "hung" means none of those within ``timeout``.
        """
        from reprolab.console import ConsoleTimeout

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = guest.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            if event is not None:
                if event.kind == REBOOT:  # the next boot's first line beat the restart line
                    return "rebooted"
                return "watchdog-fire" if event.kind == WATCHDOG_FIRE else "crash"
            try:
                guest.console.wait_for(RESTARTING, 0.01, since=since)
                return "rebooted"
            except ConsoleTimeout:
                continue
        return "hung"

    def run_reboot(self, guest: Any, timeout: float) -> Outcome:
        """Set up, start the load, reboot, and wait for the outcome (no stop: see stop())."""
        since = guest.console.position
        self.setup(guest)
        self.inject(guest)
        return self.wait_outcome(guest, timeout, since=since)
