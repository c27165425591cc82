"""A crashed guest's dump, dossier and destroy, finished after its verdict is recorded.

When the console already decided the attempt (a complete fatal report, no hang, nothing
the expectation must find in the vmcore's stacks) and the run goes on to another attempt,
nothing of the verdict waits for the vmcore: dumping it (1.2 s for 512 MiB, kdump-zlib),
triaging it and destroying the guest then run in a thread while the next attempt boots.
Nothing is lost for it: the attempt's ``result.json`` is written at once with the paths
the evidence will have, and written again, with what the dump and the triage said, when
they are done. The session joins every such thread before a restore of the same domain
and at close, so no guest outlives the run, and tells its crash hook only then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from reprolab.case import CaseSpec
from reprolab.guest.handle import Guest
from reprolab.guest.l2console import l2_of
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.run.attempt import AttemptResult

if TYPE_CHECKING:
    from reprolab.detect.report import CrashReport
    from reprolab.run.session import Session

log = logging.getLogger(__name__)

NOTE = ("vmcore and dossier written after the verdict, while the next attempt ran "
        "(the console's report decided it)")


def console_decides(case: CaseSpec, guest: Guest, report: CrashReport | None,
                    *, reproduced: bool) -> bool:
    """Can nothing in the vmcore change this attempt's verdict?

    Only a complete fatal report on the console qualifies: without one the title may come
    from the kernel log in the dump, a hang's stacks come from it, and an expected frame
    not yet found on the console may be in one of its stacks.
    """
    if guest.fatal_event is None or report is None or not report.fatal or guest.hung(report):
        return False
    if guest.nmi_position is not None or l2_of(guest) is not None:
        return False
    return reproduced or not (case.expect.frame or case.expect.in_stack)


@dataclass
class Evidence:
    """What is still to be written for one attempt, and the thread writing it."""

    session: Session
    case: CaseSpec
    guest: Guest
    kernel: KernelArtifacts
    report: CrashReport | None
    matched_in: str | None
    #: The crash hook of the run this attempt belongs to (the session's may have moved on
    #: to another test case by the time the evidence is written).
    on_crash: Callable[[AttemptResult, CrashReport | None], None] | None = None
    result: AttemptResult | None = None
    thread: threading.Thread | None = None
    #: Wall time of the dump, triage and destroy, once done.
    seconds: float | None = None
    #: Set once the guest is dumped and destroyed: its name is free again (the triage may
    #: still run), so a saved guest of that name can be restored.
    released: threading.Event = field(default_factory=threading.Event)

    def start(self, recorded: AttemptResult) -> None:
        """Dump, destroy and triage in the background; ``recorded`` is on disk already."""
        self.result = recorded
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"evidence-{self.guest.domain.name}")
        self.thread.start()

    def _run(self) -> None:
        from reprolab.replay import record_attempt_verdict
        from reprolab.run.conclude import dump, write_dossier
        from reprolab.run.observation import annotate_dossier

        assert self.result is not None
        started = time.monotonic()
        notes: list[str] = []
        if self.session.evidence_yields:
            self._step_aside()
        try:
            try:
                vmcore, seconds, dump_error = dump(self.session, self.case, self.guest)
            finally:
                self.guest.domain.destroy()
                self.released.set()
            if dump_error is not None:
                notes.append(f"no vmcore: {dump_error}")
            dossier = None
            if vmcore is not None:
                dossier = write_dossier(vmcore, self.kernel, self.guest.directory, self.report,
                                        notes)
                annotate_dossier(dossier, self.matched_in, self.case.expect.describe())
            self.result = replace(self.result, vmcore=vmcore, vmcore_seconds=seconds,
                                  dossier=dossier, dump_error=dump_error,
                                  notes=(*self.result.notes, *notes))
        except Exception as exc:  # evidence, never the verdict; recorded, not raised
            log.exception("evidence of %s failed", self.guest.domain.name)
            self.result = replace(self.result, vmcore=None, dossier=None,
                                  dump_error=f"{type(exc).__name__}: {exc}",
                                  notes=(*self.result.notes,
                                         f"evidence failed: {type(exc).__name__}: {exc}"))
        self.result.write()
        record_attempt_verdict(self.result.directory, self.result.to_json())
        self.seconds = time.monotonic() - started

    def _step_aside(self) -> None:
        """This work is off the critical path by design, so it yields the CPU to what is
        on it (the next attempt's boot, on 2 cores): the crashed guest's QEMU, which
        compresses the dump, gets the smallest CPU share, and this thread (drgn's triage)
        the lowest priority. Measured, interleaved: the next cold attempt 4.26 s instead
        of 4.63."""
        self.guest.domain.yield_cpu()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)

    def wait_released(self) -> None:
        """Until the guest is dumped and destroyed (or the thread ended without it)."""
        assert self.thread is not None
        while not self.released.wait(0.05):
            if not self.thread.is_alive():
                return

    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def finish(self) -> AttemptResult:
        """Wait for the evidence; tell the crash hook, now that the files are written."""
        assert self.thread is not None and self.result is not None
        self.thread.join()
        if self.on_crash is not None:
            self.on_crash(self.result, self.report)
        return self.result
