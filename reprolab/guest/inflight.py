"""Guest calls with one deadline, while the console keeps being read.

A blocking SSH call cannot watch the console: paramiko waits up to an hour for a channel a
wedged guest never opens, and meanwhile nobody reads the hard-lockup report the kernel has
already printed. So the call runs in a worker thread and the caller's thread keeps pumping
the console and polling libvirt. The call ends at the first of: it returns, its deadline
passes (:class:`CallTimeout`), or the guest hits a fatal event (:class:`GuestStopped`, which
the session turns into the kernel verdict). An abandoned worker is unblocked by ``abort``
(closing the SSH transport) and left to die as a daemon thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from reprolab.errors import InfraError

T = TypeVar("T")

#: Deadline of a guest call that names none: no guest call waits forever.
DEFAULT_DEADLINE = 600.0
#: How often the console is read while a call is in flight.
POLL_STEP = 0.25


class CallTimeout(InfraError):
    """A guest call outlived its deadline (every phase counted: connect, channel, command)."""


class GuestStopped(InfraError):
    """A guest call was cut short by the guest's fatal event; the verdict comes from it."""


def call_watched(
    fn: Callable[[], T],
    *,
    timeout: float | None,
    what: str,
    poll: Callable[[float], None],
    stop: Callable[[], str | None],
    abort: Callable[[], None],
) -> T:
    """Run ``fn`` in a worker thread; read the console (``poll``) until it is done.

    ``stop`` returns the fatal event's description once there is one; ``abort`` unblocks
    the worker (it must make ``fn`` fail soon, e.g. by closing its transport). An error of
    ``poll`` itself (the domain is gone) aborts the call and propagates.
    """
    limit = DEFAULT_DEADLINE if timeout is None else timeout
    deadline = time.monotonic() + limit
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"guest-call: {what}"[:60], daemon=True)
    worker.start()
    reads = 0
    try:
        while not done.is_set():
            reason = stop()
            if reason:
                raise GuestStopped(f"{what}: {reason}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallTimeout(f"{what}: no answer within {limit:.0f} s (the guest may be "
                                  "hung: see the console)")
            # Short reads first: most calls answer at once and should not wait a full step.
            poll(min(POLL_STEP, 0.02 * 2 ** min(reads, 4), left))
            reads += 1
    except BaseException:
        if not done.is_set():
            abort()
        raise
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
