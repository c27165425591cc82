"""What the harness saw happen to a guest, in order, from any source.

The console parser reports what the kernel printed; libvirt reports what the hardware saw
(pvpanic, the watchdog pausing the domain); the harness reports silence. One record type
for all three keeps "RT throttling, then the watchdog fired" a simple sequence check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["console", "libvirt", "harness"]

#: Synthetic kinds (the console parser defines the rest).
PVPANIC = "pvpanic"
WATCHDOG_FIRE = "watchdog-fire"
NO_OUTPUT = "no-output"
#: The harness injected an NMI (libvirt virDomainInjectNMI) to make a wedged kernel report.
NMI_INJECTED = "nmi-injected"
#: The guest did not answer the harness's end-of-attempt liveness probe.
UNRESPONSIVE = "unresponsive"

#: Fatal events that mean "no progress" rather than a report: silence, the guest watchdog,
#: a guest that stopped answering.
HANG_KINDS = frozenset({NO_OUTPUT, WATCHDOG_FIRE, UNRESPONSIVE})


def event_kinds() -> tuple[str, ...]:
    """Every kind an event can have: the console parser's and the synthetic ones."""
    from reprolab.detect.kinds import ALL_KINDS

    return (*ALL_KINDS, PVPANIC, WATCHDOG_FIRE, NO_OUTPUT, UNRESPONSIVE)


@dataclass(frozen=True)
class GuestEvent:
    kind: str
    line: str
    source: Source
    fatal: bool
    #: Seconds since the guest was resumed.
    at: float
    cpu: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "line": self.line, "source": self.source,
                "fatal": self.fatal, "at": round(self.at, 3), "cpu": self.cpu}
