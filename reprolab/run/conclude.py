"""The end of an attempt: fatal event -> vmcore -> report -> outcome.

After the test body (or the guest's fatal event) the console is read out, a hang gets its
NMI, the guest is dumped when the case asks for a vmcore, the whole console log is parsed
into a crash report, the vmcore into a dossier, and what was seen is matched against the
case's expectation. A dump or a triage that fails loses its file and says why in the notes;
it never loses the verdict the console already gave.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab.case import CaseSpec
from reprolab.errors import InfraError, UserError
from reprolab.guest.handle import Guest
from reprolab.guest.l2console import l2_of
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.progress import Phase
from reprolab.run.attempt import AttemptResult
from reprolab.run.hangcapture import capture_hang
from reprolab.run.layers import conclude_attempt
from reprolab.run.observation import Observation, annotate_dossier, observe
from reprolab.run.verdict import Outcome, classify
from reprolab.virt.dump import take_vmcore
from reprolab.virt.hostfiles import LocalFiles

if TYPE_CHECKING:
    from reprolab.detect.report import CrashReport
    from reprolab.run.evidence import Evidence
    from reprolab.run.session import Session

log = logging.getLogger(__name__)


def conclude(session: Session, case: CaseSpec, index: int, guest: Guest,
             kernel: KernelArtifacts, started: float, notes: list[str], *,
             may_defer: Callable[[bool], bool] | None = None
             ) -> tuple[AttemptResult, CrashReport | None, Evidence | None]:
    """The attempt's result from its guest, once the body has returned or the guest died,
    the console's crash report it was judged on, and the evidence still to write.

    ``may_defer(hit)``: whether the run goes on after an attempt that did (not) hit, so
    the dump and triage may finish while the next attempt runs (:mod:`.evidence`). When
    the console decides the verdict, they are then returned as an unstarted
    :class:`Evidence`, with the result naming the files they will write.
    """
    from reprolab.detect.report import parse_log

    if guest.fatal_event is None:
        # Pick up anything still in flight (a report may still be printing). After a fatal
        # event settle() reads on, for as long as the kernel can still print.
        with contextlib.suppress(InfraError):
            guest.poll(0.5)
    if guest.fatal_event is not None:
        session.phase(case, index, guest.directory, Phase.CRASHED, guest,
                      detail=guest.fatal_event.kind)
        capture_hang(guest, notes)
        guest.settle()
    # A kernel built with the guess unwinder marks every frame "?"; without this its
    # titles would name no frame at all.
    report = parse_log(guest.console.log_path.read_bytes(),
                       questionable_frames=kernel.config_value("UNWINDER_GUESS") == "y")
    if may_defer is not None and case.dump is not None and not session.keep_guest:
        deferred = _deferred(session, case, index, guest, kernel, started, notes, report,
                             may_defer)
        if deferred is not None:
            return deferred
    vmcore, vmcore_seconds, dump_error = _dump_fatal(session, case, index, guest, notes)
    if vmcore is not None and not session.keep_guest and l2_of(guest) is None:
        # Dumped: the guest's teardown overlaps the triage (an L2's console would end
        # with L1 and change its layer's state, so a nested guest goes down at close).
        guest.release()
    session.phase(case, index, guest.directory, Phase.TRIAGING, guest)
    dossier = None
    if vmcore is not None:
        # The verdict may need the dossier (the vmcore's log and stacks), so it is
        # written before the verdict, not in the background.
        dossier = write_dossier(vmcore, kernel, guest.directory, report, notes)
    obs = observe(guest, report, dossier, notes)
    seen = obs.seen
    outcome = classify(case.expect, seen)
    matched_in = case.expect.found_in(seen) if outcome is Outcome.REPRODUCED else None
    annotate_dossier(dossier, matched_in, case.expect.describe())
    # Which layer (L0 host, L1, L2) each event came from, and the vCPU that was spinning.
    conclude_attempt(guest, dossier, notes)
    if report is not None:
        _write_report(guest.directory, report)
    result = _result(session, case, index, guest, started, notes, obs, outcome, report,
                     matched_in, vmcore=vmcore, vmcore_seconds=vmcore_seconds,
                     dossier=dossier, dump_error=dump_error)
    return result, report, None


def _result(session: Session, case: CaseSpec, index: int, guest: Guest, started: float,
            notes: list[str], obs: Observation, outcome: Outcome,
            report: CrashReport | None, matched_in: str | None, *, vmcore: Path | None,
            vmcore_seconds: float | None, dossier: Path | None, dump_error: str | None
            ) -> AttemptResult:
    """The attempt's record from what was seen: one construction for both ways to end."""
    seen = obs.seen
    return AttemptResult(
        case=case.name, index=index, outcome=outcome, directory=guest.directory,
        accel=session.accel.accel, title=seen.title, kind=seen.kind, frame=seen.frame,
        signature=obs.signature, events=tuple(guest.events), vmcore=vmcore,
        vmcore_seconds=vmcore_seconds, dossier=dossier, boot_seconds=guest.boot_seconds,
        duration=time.monotonic() - started, notes=tuple(notes), dump_error=dump_error,
        stuck_in=report.stuck_in if report else None,
        fatal_title=report.fatal_title if report else None,
        fatal_kind=report.fatal_kind if report else None,
        hang_seconds=guest.hang_seconds if outcome is Outcome.HANG else None,
        matched_in=matched_in,
    )


def _deferred(session: Session, case: CaseSpec, index: int, guest: Guest,
              kernel: KernelArtifacts, started: float, notes: list[str],
              report: CrashReport | None,
              may_defer: Callable[[bool], bool]
              ) -> tuple[AttemptResult, CrashReport | None, Evidence] | None:
    """The result judged on the console alone, and its evidence to write later; None when
    the vmcore could change the verdict or the run stops after this attempt."""
    from reprolab.run.evidence import NOTE, Evidence, console_decides

    obs = observe(guest, report, None, [])
    outcome = classify(case.expect, obs.seen)
    hit = outcome is Outcome.REPRODUCED
    if not console_decides(case, guest, report, reproduced=hit) or not may_defer(hit):
        return None
    matched_in = case.expect.found_in(obs.seen) if hit else None
    session.phase(case, index, guest.directory, Phase.DUMPING, guest,
                  detail="after the verdict, while the next attempt runs")
    session.phase(case, index, guest.directory, Phase.TRIAGING, guest)
    conclude_attempt(guest, None, notes)
    if report is not None:
        _write_report(guest.directory, report)
    notes.append(NOTE)
    result = _result(session, case, index, guest, started, notes, obs, outcome, report,
                     matched_in, vmcore=vmcore_path(case, guest.directory),
                     vmcore_seconds=None, dossier=guest.directory / "report.json",
                     dump_error=None)
    return result, report, Evidence(session, case, guest, kernel, report, matched_in,
                                    on_crash=session.on_crash)


def _dump_fatal(session: Session, case: CaseSpec, index: int, guest: Guest,
                notes: list[str]) -> tuple[Path | None, float | None, str | None]:
    """After a fatal event, when the case asks for a vmcore: the dump."""
    if guest.fatal_event is None or case.dump is None:
        return None, None, None
    session.phase(case, index, guest.directory, Phase.DUMPING, guest)
    vmcore, seconds, dump_error = dump(session, case, guest)
    if dump_error is not None:
        notes.append(f"no vmcore: {dump_error}")
    return vmcore, seconds, dump_error


def _write_report(directory: Path, report: CrashReport) -> None:
    extra = "".join(f"{k}: {v}\n" for k, v in (
        ("stuck in", report.stuck_in), ("fatal", report.fatal_title)) if v)
    (directory / "crash-report.txt").write_text(f"{report.title}\n{extra}\n{report.report}\n")


def vmcore_path(case: CaseSpec, directory: Path) -> Path:
    """Where an attempt's vmcore lands (its name says its format)."""
    return directory / ("vmcore.elf" if case.dump == "elf" else "vmcore.kdump")


def dump(session: Session, case: CaseSpec, guest: Guest
         ) -> tuple[Path | None, float | None, str | None]:
    """Dump the guest into the artifacts: (vmcore, seconds, why it failed).

    The console already gave the kernel verdict; a dump that fails (a full disk, QEMU
    or libvirtd gone) loses the vmcore and says why, never the verdict. A partial
    vmcore is removed: on a full disk its space is what the reports still need.
    """
    assert case.dump is not None
    files = session.files
    local = vmcore_path(case, guest.directory)
    # The dump is written on the libvirt host, then brought into the artifacts.
    target = local
    try:
        guest.domain.pause()
        if not isinstance(files, LocalFiles):
            target = files.scratch(f"{guest.domain.name}.vmcore")
        core = take_vmcore(guest.domain.dom, target, case.dump,  # type: ignore[arg-type]
                           local=isinstance(files, LocalFiles))
        if case.dump == "elf" and core.size < (case.guest.memory_mib << 20):
            # An ELF memory dump holds all of RAM: a shorter one was cut off (a disk
            # that filled under it) even if libvirt reported success.
            raise InfraError(f"vmcore {target} truncated: {core.size} bytes for a "
                             f"{case.guest.memory_mib} MiB guest")
        if not files.fetch(target, local):
            raise InfraError(f"vmcore {target} could not be fetched from {files.host}")
    except InfraError as exc:
        local.unlink(missing_ok=True)
        if target != local:
            files.remove(target)
        return None, None, str(session.typed(exc))
    return local, core.seconds, None


def write_dossier(vmcore: Path, kernel: KernelArtifacts, directory: Path,
                  report: Any, notes: list[str]) -> Path | None:
    """Triage the vmcore; a failure here loses the dossier, never the verdict."""
    try:
        from reprolab.triage.vmcore import write_dossier as triage

        return triage(vmcore, kernel.vmlinux, directory, console_report=report)
    except (UserError, InfraError) as exc:
        notes.append(f"vmcore triage failed: {exc}")
    except Exception as exc:
        log.exception("vmcore triage crashed")
        notes.append(f"vmcore triage crashed: {type(exc).__name__}: {exc}")
    return None
