"""Is the guest still alive when the test body returns?

A body that starts its trigger in the background and returns at once (or one whose last
wait was shorter than the silence timeout) ends the attempt before any hang detector had a
chance: a kernel that wedged a second earlier would be "not reproduced", and a regression
suite would pass on it. So before the verdict, the harness asks the guest one trivial
question over SSH, under a deadline, while the console and libvirt are still watched. No
answer is a hang (kind ``unresponsive``), captured like any other: NMI, every CPU's stack,
vmcore.

Only over SSH: the console's shell may legitimately be busy with a foreground command the
body left running, and asking there would call that a hang. Not after the guest was asked to
reboot or power off (the old session is gone by design), nor when the body failed or the
guest already stopped (the outcome is decided).
"""

from __future__ import annotations

import re
import time

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from reprolab.detect.events import UNRESPONSIVE
from reprolab.errors import InfraError
from reprolab.guest.handle import Guest
from reprolab.guest.inflight import GuestStopped

#: How long a live guest may take to run ``true`` over SSH. Generous for TCG on a loaded
#: host (a healthy guest answers in well under a second); a wedged one never does.
PROBE_TIMEOUT_S = 30.0

#: What a kernel prints when it was asked to go down: the SSH session ends by design.
_GOING_DOWN = re.compile(rb"reboot: (?:Restarting system|Power down|System halted)")


def probe_alive(guest: Guest, notes: list[str], *, timeout: float = PROBE_TIMEOUT_S,
                after: str = "after the test body") -> bool:
    """Ask the guest over SSH whether it still runs; record a hang when it does not.

    ``after`` says what came before the probe, for the hang's line. Returns whether a
    probe was sent.
    """
    if guest.fatal_event is not None or guest.ssh is None:
        return False
    if _GOING_DOWN.search(guest.console.log_path.read_bytes()):
        return False
    deadline = time.monotonic() + timeout
    # A try waits for its channel up to the remaining deadline; one that ends early (a lost
    # connection, a refused one) is retried with a backoff, so a slow host gets the whole
    # deadline without the probe spinning on a refusal.
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.25, max=2.0),
        retry=retry_if_exception(
            lambda exc: isinstance(exc, InfraError) and not isinstance(exc, GuestStopped)
            and guest.fatal_event is None),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                guest.sh("true", timeout=max(1.0, deadline - time.monotonic()))
    except GuestStopped:
        pass  # the kernel spoke first: its fatal event decides the outcome
    except InfraError as exc:
        if guest.fatal_event is None:
            tries = retrying.statistics.get("attempt_number", 1)
            guest.mark_hang(UNRESPONSIVE, f"harness: guest did not answer over SSH within "
                                          f"{timeout:.0f} s {after} ({exc})")
            notes.append(f"liveness probe: no answer over SSH in {timeout:.0f} s "
                         f"({tries} tries): {exc}")
    return True
