"""Noise under any scenario: a stress-ng mix of CPU, memory, I/O, fork and timer load.

Field hangs happen on busy machines; a scenario alone on an idle guest can miss the races
that only open under interrupts, reclaim and fork pressure. Composed with another scenario
(see :class:`~reprolab.scenario.compose.Together`), it adds that pressure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reprolab.scenario.base import Scenario, detached, require

#: stress-ng stressors this scenario drives, each a worker count (0 leaves it out).
STRESSORS = ("cpu", "vm", "io", "fork", "timer")


@dataclass(frozen=True)
class BackgroundLoad(Scenario):
    name: ClassVar[str] = "background_load"

    cpu: int = 1
    vm: int = 1
    io: int = 1
    fork: int = 1
    timer: int = 1
    #: Memory each vm worker cycles through (stress-ng size syntax).
    vm_bytes: str = "32M"

    def __post_init__(self) -> None:
        for stressor in STRESSORS:
            count = getattr(self, stressor)
            require(0 <= count <= 64, "background_load",
                    f"{stressor} must be 0..64 workers, got {count}")
        require(any(getattr(self, s) for s in STRESSORS), "background_load",
                "at least one stressor needs workers")
        require(self.vm_bytes[:-1].isdigit() and self.vm_bytes[-1] in "KMG%", "background_load",
                f"vm_bytes must be like 32M, 1G or 10%, got {self.vm_bytes!r}")

    def command(self) -> str:
        args = ["stress-ng", "--timeout", "0"]
        for stressor in STRESSORS:
            count = getattr(self, stressor)
            if count:
                args += [f"--{stressor}", str(count)]
        if self.vm:
            args += ["--vm-bytes", self.vm_bytes]
        return " ".join(args)

    def inject_script(self) -> str:
        return detached(self.name, f"exec {self.command()}")
