"""SCHED_FIFO busy loops pinned per CPU, under chosen RT bandwidth knobs.

With the default bandwidth (950 ms of every 1 s) the first hog that runs its budget out
prints "sched: RT throttling activated" and the rest of the CPU goes to everyone else. With
``runtime_us=-1`` nothing throttles the hogs: per-CPU kthreads (kworkers, ksoftirqd, the RCU
grace-period thread) starve on the hogged CPUs, which is how a box ends in hung tasks and RCU
stalls, and (hogging every CPU) how a reboot never gets to the point of rebooting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reprolab.scenario.base import STATE_DIR, Scenario, cpu_list, detached, require

SYSCTL = "/proc/sys/kernel"
FEATURES = "/sys/kernel/debug/sched/features"
_SAVED = f"{STATE_DIR}/rt_hog.saved"


@dataclass(frozen=True)
class RtHog(Scenario):
    name: ClassVar[str] = "rt_hog"

    #: CPUs to hog, one or more loops each; None hogs every CPU the guest has.
    cpus: tuple[int, ...] | None = (0,)
    hogs_per_cpu: int = 1
    priority: int = 50
    #: kernel.sched_rt_runtime_us: -1 disables throttling (RT tasks may take every cycle).
    runtime_us: int = 950_000
    #: kernel.sched_rt_period_us.
    period_us: int = 1_000_000
    #: Seconds the detached launcher waits before starting the hogs, so the command that
    #: starts them returns first even when they will starve sshd.
    delay_s: float = 0.5
    #: The RT_RUNTIME_SHARE scheduler feature (None: leave it). On, a throttled CPU borrows
    #: unused RT runtime from the others and a pinned hog gets its whole CPU after the
    #: throttling message; that was the default before Linux 5.1 (so on the 3.10 field box).
    runtime_share: bool | None = None
    #: Hogs that survive SIGTERM (as RT applications that shut down on their own terms do):
    #: a shutdown's "kill everything" step then leaves them running until SIGKILL.
    ignore_sigterm: bool = False
    #: Seconds after which the hogs on CPUs not in ``keep_cpus`` are killed (0: never). RT
    #: work that ends on some CPUs leaves their RT runtime unused: under RT_RUNTIME_SHARE the
    #: hogs that keep running borrow it and stop being throttled.
    stop_after_s: float = 0
    keep_cpus: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        where = "rt_hog"
        require(1 <= self.priority <= 99, where, f"priority must be 1..99, got {self.priority}")
        require(self.period_us >= 1, where, f"period_us must be positive, got {self.period_us}")
        require(self.runtime_us == -1 or 0 <= self.runtime_us <= self.period_us, where,
                f"runtime_us must be -1 or 0..period_us ({self.period_us}), got "
                f"{self.runtime_us}")
        require(self.cpus is None or (len(self.cpus) > 0 and all(c >= 0 for c in self.cpus)),
                where, f"cpus must be None or non-negative CPU numbers, got {self.cpus}")
        require(1 <= self.hogs_per_cpu <= 64, where,
                f"hogs_per_cpu must be 1..64, got {self.hogs_per_cpu}")
        require(self.delay_s >= 0, where, "delay_s must not be negative")
        require(self.stop_after_s >= 0, where, "stop_after_s must not be negative")
        require(all(c >= 0 for c in self.keep_cpus), where,
                f"keep_cpus must be CPU numbers, got {self.keep_cpus}")

    @property
    def unthrottled(self) -> bool:
        return self.runtime_us == -1

    def setup_script(self) -> str:
        # Save the knobs once (a second setup must not save its own values), then set them:
        # runtime first may fail when it exceeds the old period, so it is written again.
        return (
            f"mkdir -p {STATE_DIR}; [ -f {_SAVED} ] || echo "
            f"\"$(cat {SYSCTL}/sched_rt_runtime_us) $(cat {SYSCTL}/sched_rt_period_us)\" "
            f"> {_SAVED}; "
            f"echo {self.runtime_us} > {SYSCTL}/sched_rt_runtime_us 2>/dev/null; "
            f"echo {self.period_us} > {SYSCTL}/sched_rt_period_us && "
            f"echo {self.runtime_us} > {SYSCTL}/sched_rt_runtime_us"
            + self._feature_script(self.runtime_share)
        )

    @staticmethod
    def _feature_script(share: bool | None) -> str:
        if share is None:
            return ""
        return f"; echo {'' if share else 'NO_'}RT_RUNTIME_SHARE > {FEATURES}"

    def hog_command(self, cpu: str) -> str:
        trap = "trap \"\" TERM; " if self.ignore_sigterm else ""
        return f"chrt -f {self.priority} taskset -c {cpu} sh -c '{trap}while :; do :; done'"

    def inject_script(self) -> str:
        # One detached launcher; each hog is its child, in the launcher's process group.
        launcher = (
            f"sleep {self.delay_s}; for c in {cpu_list(self.cpus)}; do "
            f"n=0; while [ $n -lt {self.hogs_per_cpu} ]; do "
            f"{self.hog_command('$c')} & {self._stopper()}n=$((n+1)); done; done; wait"
        )
        return detached(self.name, launcher)

    def _stopper(self) -> str:
        """Shell, right after a hog started, that kills it later unless its CPU is kept."""
        if self.stop_after_s <= 0:
            return ""
        keep = " ".join(str(c) for c in self.keep_cpus)
        return (f"p=$!; case \" {keep} \" in *\" $c \"*) ;; "
                f"*) ( sleep {self.stop_after_s}; kill -9 $p ) & ;; esac; ")

    def cleanup_script(self) -> str:
        return (
            f"if [ -f {_SAVED} ]; then read r p < {_SAVED}; "
            f"echo -1 > {SYSCTL}/sched_rt_runtime_us; echo $p > {SYSCTL}/sched_rt_period_us; "
            f"echo $r > {SYSCTL}/sched_rt_runtime_us; rm -f {_SAVED}; fi"
            + self._feature_script(False if self.runtime_share else None) + "; true"
        )

