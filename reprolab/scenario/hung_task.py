"""A task stuck in D state, for the hung-task detector to report.

Two real ways in. On a built kernel LKDTM's HUNG_TASK sleeps uninterruptibly forever. On the
stock kernel (no LKDTM) a filesystem is frozen under a writer: ext4 on a loop device,
``fsfreeze -f``, then a write, which sleeps in ``percpu_rwsem_wait`` (uninterruptibly, not
killably, so the detector counts it) until the filesystem is thawed. khungtaskd then prints
"INFO: task sh:N blocked for more than T seconds." with the writer's stack, titled
"INFO: task hung in mnt_want_write". ``cmdline()`` lowers the detector's timeout from its
120 s default so the report comes within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from reprolab.scenario.base import (
    STATE_DIR,
    GuestLike,
    Scenario,
    detached,
    one_line,
    require,
)
from reprolab.scenario.modules import ensure_modules

LKDTM_DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"
MOUNT = "/mnt/rl-hung"
IMAGE = "/tmp/rl-hung.img"
Method = Literal["auto", "fsfreeze", "lkdtm"]


@dataclass(frozen=True)
class HungTask(Scenario):
    name: ClassVar[str] = "hung_task"

    method: Method = "auto"
    #: kernel.hung_task_timeout_secs (set at setup too, so the scenario works without cmdline).
    timeout_s: int = 5
    #: kernel.hung_task_check_interval_secs (0 means the timeout, the kernel's default).
    check_interval_s: int = 1
    #: Tasks to block (each one is reported, up to the detector's warning count).
    tasks: int = 1
    #: Size of the frozen filesystem's image, MiB.
    image_mib: int = 8

    def __post_init__(self) -> None:
        where = "hung_task"
        require(self.method in ("auto", "fsfreeze", "lkdtm"), where,
                f"method must be auto, fsfreeze or lkdtm, got {self.method!r}")
        require(1 <= self.timeout_s <= 3600, where,
                f"timeout_s must be 1..3600, got {self.timeout_s}")
        require(0 <= self.check_interval_s <= 3600, where,
                f"check_interval_s must be 0..3600, got {self.check_interval_s}")
        require(1 <= self.tasks <= 32, where, f"tasks must be 1..32, got {self.tasks}")
        require(self.image_mib >= 2, where, "image_mib must be at least 2")

    def cmdline(self) -> dict[str, int]:
        """The marker's cmdline= entries that arm the detector from boot."""
        return {
            "sysctl.kernel.hung_task_timeout_secs": self.timeout_s,
            "sysctl.kernel.hung_task_check_interval_secs": self.check_interval_s,
            "sysctl.kernel.hung_task_warnings": -1,
        }

    def sysctl_script(self) -> str:
        return (
            f"echo {self.timeout_s} > /proc/sys/kernel/hung_task_timeout_secs; "
            f"echo {self.check_interval_s} > /proc/sys/kernel/hung_task_check_interval_secs"
        )

    def freeze_script(self) -> str:
        return (
            f"mkdir -p {MOUNT} {STATE_DIR} && "
            f"dd if=/dev/zero of={IMAGE} bs=1M count={self.image_mib} 2>/dev/null && "
            f"{{ mkfs.ext4 -q -F {IMAGE} 2>/dev/null || mke2fs -q -F {IMAGE} >/dev/null; }} && "
            f"mount -t ext4 -o loop {IMAGE} {MOUNT} && fsfreeze --freeze {MOUNT} && "
            f"touch {STATE_DIR}/hung_task.frozen"
        )

    def resolve(self, guest: GuestLike) -> Literal["fsfreeze", "lkdtm"]:
        if self.method != "auto":
            return self.method
        has = guest.sh(one_line(f"[ -e {LKDTM_DIRECT} ] && echo lkdtm || echo none")).strip()
        return "lkdtm" if has.endswith("lkdtm") else "fsfreeze"

    def setup(self, guest: GuestLike) -> None:
        guest.sh(one_line(self.sysctl_script()))
        if self.resolve(guest) == "fsfreeze":
            ensure_modules(guest, ("loop", "ext4"),
                           "grep -qw ext4 /proc/filesystems && [ -e /dev/loop-control ]")
            guest.sh(one_line(self.freeze_script()), timeout=120.0)

    def blocker(self, method: Literal["fsfreeze", "lkdtm"]) -> str:
        if method == "lkdtm":
            return f"echo HUNG_TASK > {LKDTM_DIRECT}"
        return f"echo blocked > {MOUNT}/written-while-frozen"

    def inject(self, guest: GuestLike) -> None:
        method = self.resolve(guest)
        script = "; ".join(detached(self.name, self.blocker(method)) for _ in range(self.tasks))
        guest.sh(one_line(script), timeout=self.inject_timeout)

    def stop_script(self) -> str:
        # Thawing lets the frozen writers finish; LKDTM's sleeper never wakes (it is a
        # deliberate leak) and killing it is a no-op, which is fine.
        return (f"[ -f {STATE_DIR}/hung_task.frozen ] && fsfreeze --unfreeze {MOUNT}; "
                f"sleep 0.2; {super().stop_script()}")

    def cleanup_script(self) -> str:
        return (f"if [ -f {STATE_DIR}/hung_task.frozen ]; then umount {MOUNT}; rm -f {IMAGE} "
                f"{STATE_DIR}/hung_task.frozen; fi; true")

