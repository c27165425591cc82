"""Stacks of every CPU when the guest stopped making progress and said nothing.

A CPU spinning with interrupts off on a lock the others then spin on leaves no timer
running anywhere: every lockup detector is blind and the console goes silent. The harness
then sees only its own silence timeout or the guest watchdog. An NMI still gets through:
libvirt's virDomainInjectNMI raises one on every vCPU, and with ``unknown_nmi_panic`` (see
:data:`NMI_CMDLINE`) the kernel panics from it, printing the stack of the CPU that took the
panic and leaving every CPU's registers in the vmcore taken next. The events record the
order: silence or watchdog first, then the NMI, then whatever the kernel printed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reprolab.detect.events import HANG_KINDS, NMI_INJECTED, PVPANIC
from reprolab.errors import InfraError

if TYPE_CHECKING:
    from reprolab.guest.handle import Guest

#: Kernel parameters that make an injected NMI a panic with stacks, and make the lockup
#: detectors (when a timer still runs somewhere) print every CPU's backtrace. Parameters a
#: kernel does not know are handed to init, which ignores them.
NMI_CMDLINE: Mapping[str, Any] = {
    "unknown_nmi_panic": None,
    "sysctl.kernel.panic_on_unrecovered_nmi": 1,
    "hardlockup_all_cpu_backtrace": 1,
    "softlockup_all_cpu_backtrace": 1,
}

#: How long the kernel has to answer the NMI (print, or report its panic) before the dump is
#: taken anyway: the vmcore holds every CPU's registers whether or not it printed.
NMI_REACTION_S = 20.0


def capture_hang(guest: Guest, notes: list[str], *, react: float = NMI_REACTION_S) -> bool:
    """After a hang event, inject an NMI and read what the kernel makes of it.

    Returns whether an NMI was injected. Does nothing when the attempt did not end on a hang
    (a crash already reported itself) or the NMI cannot be delivered (the note says so).
    """
    first = guest.fatal_event
    if first is None or first.kind not in HANG_KINDS:
        return False
    position = guest.console.position
    try:
        guest.domain.inject_nmi()
        if guest.domain.state().state == "paused":  # the watchdog's pause action
            guest.domain.resume()
    except InfraError as exc:
        notes.append(f"hang capture: {exc}")
        return False
    guest.nmi_position = position
    guest.record(NMI_INJECTED, "harness: NMI injected on every vCPU (virDomainInjectNMI)",
                 "harness")
    deadline = time.monotonic() + react
    while time.monotonic() < deadline and not guest.seen(PVPANIC):
        try:
            guest.poll(0.25)
        except InfraError as exc:
            notes.append(f"hang capture: {exc}")
            break
    if not guest.seen(PVPANIC):
        notes.append(f"hang capture: no panic reported in {react:.0f} s after the NMI; "
                     "stacks come from the vmcore's CPU notes only")
    elif guest.console.position == position:
        # Printed from NMI context, the panic is flushed to the console only after the panic
        # notifiers, and pvpanic pauses the guest first: its text is in the vmcore's log.
        notes.append("hang capture: the NMI panicked the kernel (pvpanic); its report is in "
                     "the vmcore's log, not on the console")
    return True
