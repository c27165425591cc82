"""One reprolab run against one libvirt host: boots guests and turns them into results.

A session opens the libvirt connection that owns every guest it starts (AUTODESTROY ties
the guests to it), reaps what dead runs left behind, decides the acceleration once, and
holds the run's SSH key pair. :meth:`Session.run_attempt` is the whole life of an attempt:
boot, the test body, capture, triage, verdict, with every artifact kept whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab.accel import AccelInfo, detect_accel
from reprolab.case import CaseSpec
from reprolab.console import Console
from reprolab.errors import Failure, InfraError, LibvirtUnavailable, UserError
from reprolab.guest.handle import Guest
from reprolab.guest.inflight import CallTimeout
from reprolab.guest.spec import GuestSpec
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.paths import runtime_root
from reprolab.progress import Phase, ProgressEvent, emit
from reprolab.run.attempt import AttemptInterrupted, AttemptResult
from reprolab.run.boot import safe_name
from reprolab.run.liveness import probe_alive
from reprolab.run.record import record_attempt
from reprolab.run.vcpustats import start_sampling
from reprolab.run.verdict import Outcome
from reprolab.virt import DEFAULT_URI
from reprolab.virt.connection import connection_alive, open_connection
from reprolab.virt.domain import Domain
from reprolab.virt.hostfiles import HostFiles, LocalFiles, host_files
from reprolab.virt.reaper import Reaped, reap_orphans
from reprolab.virt.scratch import ReapedScratch, claim, reap_scratch

if TYPE_CHECKING:
    from reprolab.detect.report import CrashReport
    from reprolab.image.build import GuestImage
    from reprolab.run.evidence import Evidence
    from reprolab.run.startahead import StartAhead

log = logging.getLogger(__name__)

Body = Callable[[Guest], None]

#: In an attempt whose guest was started while the attempt before ran: how long that took
#: (off this attempt's path) and whether its console was attached there too.
STARTED_AHEAD = "started-ahead.json"
#: Crashed guests whose dump and triage may run on behind the attempts at once.
MAX_PENDING_EVIDENCE = 2


class Session:
    def __init__(
        self,
        *,
        uri: str = DEFAULT_URI,
        artifacts: Path,
        keep_guest: bool = False,
        kernel_override: str | None = None,
        overlap_teardown: bool = False,
    ) -> None:
        self.uri = uri
        #: Let a dumped guest's destroy (0.2 s under a prompt reaper, 1.2-1.6 s when PID 1
        #: reaps QEMU late: scripts/start-daemons.sh) run on while the next attempt boots;
        #: :meth:`close` waits for every one. Off by default for callers that look for the
        #: domain in libvirt right after an attempt.
        #: With it too, a crashed guest whose console decided the verdict is dumped and
        #: triaged while the next attempt runs (:mod:`reprolab.run.evidence`).
        self.overlap_teardown = overlap_teardown
        #: That evidence runs at the lowest CPU share and priority, behind the next boot.
        self.evidence_yields = True
        #: With it too, the next attempt's cold guest is started, paused, while this
        #: attempt's boots and runs (:mod:`reprolab.run.startahead`).
        self.start_ahead = True
        self._started_ahead: StartAhead | None = None
        #: The attempt running (its index within its case).
        self._attempt_index = 0
        #: Destroys still running, by domain name.
        self._teardowns: dict[str, threading.Thread] = {}
        self._evidence: list[Evidence] = []
        #: Results rewritten once their evidence was written (by attempt directory).
        self._final: dict[Path, AttemptResult] = {}
        #: How long the last evidence written after its verdict took (dump, triage, destroy).
        self.evidence_seconds: float | None = None
        self.artifacts = artifacts
        self.keep_guest = keep_guest
        self.kernel_override = kernel_override
        self._conn: Any = None
        self._accel: AccelInfo | None = None
        self._kernels: dict[str, KernelArtifacts] = {}
        self._images: dict[tuple[str, str], GuestImage] = {}
        self.reaped: list[Reaped] = []
        self.run_dir = runtime_root() / f"session-{secrets.token_hex(4)}"
        claim(self.run_dir)
        # What SIGKILLed runners left (their domains went with their connections).
        self.reaped_scratch: list[ReapedScratch] = reap_scratch(self.run_dir.parent,
                                                                keep=self.run_dir)
        for each in self.reaped_scratch:
            log.warning("reaped scratch %s: %s", each.path, each.reason)
        self._attempt_dir: Path | None = None
        #: Files on the libvirt host: shipped there (qemu+ssh) or used in place (local).
        self.files: HostFiles = host_files(uri, self.run_dir.name)
        self._ssh_key: tuple[Path, Path] | None = None
        #: Bundles carry the kernel, vmlinux and initrd (``--portable``).
        self.portable_bundles = False
        #: Told of each attempt whose guest had a fatal event, once its files are written:
        #: (the attempt, the console's crash report). The plugin's crash hook.
        self.on_crash: Callable[[AttemptResult, CrashReport | None], None] | None = None

    # -- shared resources --------------------------------------------------------------------
    @property
    def conn(self) -> Any:
        lost = self._conn is not None and not self._conn_alive(rpc=False)
        if lost:
            # libvirtd went away under an earlier attempt: the next one needs a new one.
            self._conn = None
        if self._conn is None:
            self._conn = open_connection(self.uri)
            self.reaped = reap_orphans(self._conn, mine=lost)
            for r in self.reaped:
                log.warning("reaped orphan domain %s: %s", r.name, r.reason)
        return self._conn

    def _conn_alive(self, *, rpc: bool = True) -> bool:
        """Is the session's libvirt connection still up? (``rpc``: ask the daemon too.)"""
        return self._conn is not None and connection_alive(self._conn, rpc=rpc)

    def typed(self, exc: InfraError) -> InfraError:
        """A guest that "died" (or a boot that "timed out") because libvirtd went away is
        libvirt's failure, not the guest's: typed so, a lab pool takes the host out instead
        of retrying on it."""
        if (not isinstance(exc, LibvirtUnavailable) and self._conn is not None
                and not self._conn_alive()):
            return LibvirtUnavailable(f"libvirt at {self.uri} went away mid-attempt: {exc}",
                                      detail=exc.detail)
        return exc

    @property
    def accel(self) -> AccelInfo:
        if self._accel is None:
            from reprolab.kvm_probe import probe_kvm

            self._accel = detect_accel(probe=lambda: probe_kvm(self.uri))
        return self._accel

    def finish_teardowns(self) -> None:
        """Wait for every dump, triage and destroy an attempt left running (see
        ``overlap_teardown``); the crash hook hears of each attempt once its files are on
        disk."""
        self.finish_evidence()
        while self._teardowns:
            self._teardowns.popitem()[1].join()

    def finish_evidence(self) -> None:
        """Wait for the vmcores and dossiers still being written (see :meth:`final`)."""
        self._finish_evidence(wait=True)

    def final(self, result: AttemptResult) -> AttemptResult:
        """``result`` as its ``result.json`` says once its evidence is written: with the
        dump's time, and the dump's or the triage's failure if there was one."""
        return self._final.get(result.directory, result)

    def _finish_evidence(self, *, wait: bool, domain: str | None = None) -> None:
        for evidence in list(self._evidence):
            if domain is not None and evidence.guest.domain.name != domain:
                continue
            if wait or evidence.done():
                self._evidence.remove(evidence)
                self._collect(evidence)

    def _collect(self, evidence: Evidence) -> None:
        """``evidence`` written (waited for if need be): its final result on record."""
        final = evidence.finish()
        self._final[final.directory] = final
        self.evidence_seconds = evidence.seconds

    def _bound_evidence(self) -> None:
        """Wait for the oldest crashed guest still being dumped while
        :data:`MAX_PENDING_EVIDENCE` are: each holds a guest's whole memory until it is
        dumped and destroyed, and at the CPU share it runs at
        (:meth:`Evidence._step_aside`) the dumping could fall behind. A triage still
        running holds no guest and is not waited for."""
        while True:
            holding = [e for e in self._evidence if not e.released.is_set()]
            if len(holding) < MAX_PENDING_EVIDENCE:
                return
            holding[0].wait_released()

    def busy(self, domain: str) -> bool:
        """Is a dump, triage or destroy of an earlier attempt still holding ``domain``?"""
        return (any(e.guest.domain.name == domain and not e.done() for e in self._evidence)
                or (domain in self._teardowns and self._teardowns[domain].is_alive()))

    def finish_domain(self, domain: str) -> None:
        """Wait until nothing an earlier attempt left running holds ``domain`` (a restore
        under the same name needs it gone)."""
        self._finish_evidence(wait=True, domain=domain)
        thread = self._teardowns.pop(domain, None)
        if thread is not None:
            thread.join()

    def close(self) -> None:
        self.discard_ahead()
        self.finish_teardowns()
        if self._conn is not None and not self._conn_alive(rpc=False):
            # Guests started on a connection libvirtd dropped outlive their AUTODESTROY.
            with contextlib.suppress(InfraError):
                self.conn  # noqa: B018 - reconnecting reaps them
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("libvirt connection close failed", exc_info=True)
            self._conn = None
        self.files.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def kernel(self, spec: str | Mapping[str, Any], artifacts_dir: Path | None = None
               ) -> KernelArtifacts:
        if self.kernel_override:
            spec = self.kernel_override
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in self._kernels:
            if spec == "stock":
                self._kernels[key] = stock_kernel()
            else:
                from reprolab.kernel.resolve import resolve_kernel
                from reprolab.kernel.spec import parse_kernel_spec

                parsed = parse_kernel_spec(spec)
                self._kernels[key] = resolve_kernel(parsed, artifacts_dir=artifacts_dir)
        return self._kernels[key]

    def pin_kernel(self, spec: str | Mapping[str, Any], kernel: KernelArtifacts) -> None:
        """Use ``kernel`` for ``spec`` without resolving it (a replay's exact kernel)."""
        self._kernels[json.dumps(spec, sort_keys=True, default=str)] = kernel

    def pin_image(self, recipe: str, kernel: KernelArtifacts, image: GuestImage) -> None:
        """Use ``image`` for ``recipe`` with ``kernel`` (a replay's exact initrd)."""
        self._images[(recipe, kernel.key)] = image

    def check_expectation(self, case: CaseSpec, artifacts_dir: Path | None = None) -> None:
        """Before any boot: the guest's vCPUs fit the kernel that will run, and every
        function the expectation names exists in it (UserError naming it, the kernel and a
        close existing name otherwise)."""
        from reprolab.kernel.fit import check_vcpus
        from reprolab.kernel.symbols import check_functions

        kernel = self.kernel(case.kernel, artifacts_dir)
        check_vcpus(kernel, case.guest.vcpus, where=f"test case {case.name}: guest")
        names = [n for n in (case.expect.frame, case.expect.in_stack) if n]
        if names:
            check_functions(kernel, names, where=f"test case {case.name}: expect")

    def image(self, recipe: str, kernel: KernelArtifacts) -> GuestImage:
        from reprolab.image.build import build_image

        key = (recipe, kernel.key)
        if key not in self._images:
            self._images[key] = build_image(recipe, kernel)
        return self._images[key]

    def ssh_key(self) -> tuple[Path, Path]:
        """The run's key pair: (private key, authorized_keys file QEMU can read)."""
        if self._ssh_key is None:
            from reprolab.ssh import generate_keypair

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.run_dir.chmod(0o755)
            private, public = generate_keypair(self.run_dir / "ssh")
            auth = self.run_dir / "authorized_keys"
            auth.write_text(public.strip() + "\n")
            auth.chmod(0o644)
            self._ssh_key = (private, auth)
        return self._ssh_key

    # -- one guest ---------------------------------------------------------------------------
    def guest_spec(self, case: CaseSpec, kernel: KernelArtifacts, image: GuestImage
                   ) -> GuestSpec:
        from reprolab.run.boot import guest_spec

        return guest_spec(self, case, kernel, image)

    def boot(self, case: CaseSpec, directory: Path, kernel: KernelArtifacts,
             image: GuestImage) -> tuple[Guest, Path]:
        """A usable guest for the attempt (see :func:`reprolab.run.boot.cold_boot`): the
        one started ahead for it when there is one (:mod:`reprolab.run.startahead`)."""
        from reprolab.run.boot import cold_boot

        key = repr((case, kernel.key, image.key))
        ahead = self._take_started_ahead(key)
        started = ahead.take() if ahead is not None else None
        if ahead is not None and started is not None:
            (directory / STARTED_AHEAD).write_text(json.dumps({
                "started_ahead_seconds": round(ahead.seconds or 0.0, 3),
                "console_attached_ahead": ahead.console is not None,
            }, indent=2) + "\n")
        return cold_boot(self, case, directory, kernel, image, ahead=started,
                         console=ahead.console if ahead is not None and started else None,
                         on_started=lambda: self._start_ahead(case, kernel, image, key))

    def _take_started_ahead(self, key: str) -> StartAhead | None:
        """The guest started ahead for this attempt; one started for another is discarded."""
        ahead, self._started_ahead = self._started_ahead, None
        if ahead is not None and ahead.key != key:
            ahead.discard()
            return None
        return ahead

    def _start_ahead(self, case: CaseSpec, kernel: KernelArtifacts, image: GuestImage,
                     key: str) -> None:
        """Start the next attempt's guest behind this one's, when another attempt of the
        case may follow (local guests only: a lab host's pty console attaches late)."""
        if (not self.start_ahead or not self.overlap_teardown or self.keep_guest
                or not isinstance(self.files, LocalFiles)
                or self._attempt_index >= case.attempts or self._started_ahead is not None):
            return
        from reprolab.run.boot import start_paused
        from reprolab.run.startahead import StartAhead

        attempt = f"attempt-{self._attempt_index + 1:03d}"
        conn = self.conn
        self._started_ahead = StartAhead(
            key, f"{safe_name(case.name)}-{attempt}",
            lambda: start_paused(self, case, kernel, image, attempt, conn),
            attach=self.console_ahead).start()

    def console_ahead(self, domain: Domain) -> Console:
        """A console on a guest brought up ahead, logging into the run directory until its
        attempt moves the log into its own."""
        console = Console(self.uri, domain.name,
                          self.run_dir / f"{domain.name}.ahead-console.log",
                          socket=domain.console_socket)
        console.attach()
        return console

    def discard_ahead(self) -> None:
        """No attempt of this case follows: the guest started for one goes."""
        if self._started_ahead is not None:
            self._started_ahead.discard()
            self._started_ahead = None

    # -- one attempt -------------------------------------------------------------------------
    def attempt_dir(self, case: CaseSpec, index: int) -> Path:
        """A new directory for the attempt; an earlier one of the same name is never reused."""
        base = self.artifacts / safe_name(case.name)
        if not base.resolve().is_relative_to(self.artifacts.resolve()):
            raise UserError(f"case name {case.name!r} leads out of {self.artifacts}")
        base.mkdir(parents=True, exist_ok=True)
        name = f"attempt-{index:03d}"
        for n in range(1000):
            directory = base / (name if n == 0 else f"{name}.{n}")
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            self._attempt_dir = directory
            return directory
        raise InfraError(f"no free attempt directory under {base}")

    def run_attempt(self, case: CaseSpec, index: int, body: Body
                    ) -> tuple[AttemptResult, BaseException | None]:
        """Run one attempt; returns its result and the test body's own failure, if any.

        Ctrl-C still stops the run, as :class:`AttemptInterrupted` (a KeyboardInterrupt),
        but only after the attempt's ``result.json`` says it was interrupted.
        """
        self._attempt_dir = None
        self._attempt_index = index
        try:
            result, body_error = self._run_attempt(case, index, body)
        except BaseException as exc:
            self.discard_ahead()  # the run stops here: no attempt takes the next guest
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, AttemptInterrupted):
                raise AttemptInterrupted(self._interrupted(case, index)) from exc
            raise
        if index >= case.attempts or case.stops_after(result.outcome is Outcome.REPRODUCED):
            self.discard_ahead()  # no attempt of this case follows
        return result, body_error

    def _interrupted(self, case: CaseSpec, index: int) -> AttemptResult:
        directory = self._attempt_dir or self.attempt_dir(case, index)
        result = AttemptResult(case.name, index, Outcome.INFRA_ERROR, directory,
                               self._accel.accel if self._accel else "unknown",
                               failure=Failure.interrupted(
                                   "interrupted (SIGINT): no kernel verdict"),
                               started_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
        result.write()
        return result

    def _run_attempt(self, case: CaseSpec, index: int, body: Body
                     ) -> tuple[AttemptResult, BaseException | None]:
        """The attempt itself: see :meth:`run_attempt`.

        Infrastructure errors become an ``infra-error`` result, never a kernel verdict; a
        body that fails because the kernel crashed under it is a kernel result.
        """
        self._finish_evidence(wait=False)  # the crash hook of earlier attempts, if done
        self._bound_evidence()
        directory = self.attempt_dir(case, index)
        self.phase(case, index, directory, Phase.BUILDING)
        at = _Attempt(case, index, directory, self.accel.accel,
                      [f"accel={self.accel.accel}: {self.accel.reason}"])
        try:
            kernel = self.kernel(case.kernel, directory)
            image = self.image(case.guest.image, kernel)
            self.phase(case, index, directory, Phase.BOOTING)
            guest, serial = self.boot(case, directory, kernel, image)
        except InfraError as exc:
            result = replace(self._infra(at, exc), started_at=at.started_at)
            result.write()
            self.phase(case, index, directory, Phase.DONE, detail=str(result.outcome))
            return result, None
        except UserError:
            # Input to fix (a recipe, a patch): nothing ran, so no attempt directory stays.
            with contextlib.suppress(OSError):
                directory.rmdir()
            raise
        self._watch_events(case, index, guest)
        start_sampling(guest)  # L0: the host's per-vCPU thread times, on the timeline
        self.phase(case, index, directory, Phase.RUNNING, guest)
        concluded = False
        evidence: Evidence | None = None
        try:
            body_error, infra_error = run_body(guest, body, at.notes)
            if body_error is None and infra_error is None:
                probe_alive(guest, at.notes)
            result, report, concluded, evidence = self._finish(at, guest, kernel, infra_error)
        except BaseException:
            evidence = None  # never started: the guest goes now
            raise
        finally:  # whatever happened (Ctrl-C in the body or the dump too): no guest left,
            # unless --keep-guest asked for one that reached its verdict, or its evidence
            # (which destroys it once dumped) is still to be written
            pending = guest.close(keep=(self.keep_guest and concluded) or evidence is not None,
                                  serial_log=serial, files=self.files,
                                  defer_teardown=self.overlap_teardown)
            self._teardowns = {name: t for name, t in self._teardowns.items() if t.is_alive()}
            if pending is not None:
                self._teardowns[guest.domain.name] = pending
        if body_error is not None:
            result = replace(result, body_error=f"{type(body_error).__name__}: {body_error}")
        result = replace(result, started_at=at.started_at,
                         notes=(*result.notes, *guest.notes, *self._console_notes(guest)))
        result = record_attempt(result)
        if evidence is not None:
            evidence.start(result)
            self._evidence.append(evidence)
        elif self.on_crash is not None and guest.fatal_event is not None:
            # After the files are written: a lab's hook may upload them.
            self.on_crash(result, report)
        self.phase(case, index, directory, Phase.DONE, guest, detail=str(result.outcome))
        return result, body_error

    def _finish(self, at: _Attempt, guest: Guest, kernel: KernelArtifacts,
                infra_error: InfraError | None
                ) -> tuple[AttemptResult, CrashReport | None, bool, Evidence | None]:
        """The result once the body is done (infrastructure's, or the concluded kernel's),
        its crash report, whether it was concluded, and its evidence still to write."""
        if infra_error is not None:
            return self._infra(at, infra_error), None, False, None
        case, index = at.case, at.index

        def may_defer(hit: bool) -> bool:
            return self.overlap_teardown and index < case.attempts and not case.stops_after(hit)

        try:
            result, report, evidence = self._conclude(case, index, guest, kernel, at.started,
                                                      at.notes, may_defer)
        except InfraError as exc:
            return self._infra(at, exc), None, False, None
        return result, report, True, evidence

    def _infra(self, at: _Attempt, exc: InfraError | UserError) -> AttemptResult:
        if isinstance(exc, InfraError):
            exc = self.typed(exc)
        # Always written: a boot that timed out before printing anything has no detail.
        (at.directory / "error.txt").write_text(f"{exc}\n\n{exc.detail or ''}\n")
        return AttemptResult(at.case.name, at.index, Outcome.INFRA_ERROR, at.directory,
                             at.accel, failure=Failure.of(exc),
                             duration=time.monotonic() - at.started, notes=tuple(at.notes))

    @staticmethod
    def phase(case: CaseSpec, index: int, directory: Path, phase: Phase,
              guest: Guest | None = None, detail: str = "") -> None:
        events = tuple(e.kind for e in guest.events) if guest is not None else ()
        emit(ProgressEvent(case.name, index, phase, directory, events, detail))

    def _watch_events(self, case: CaseSpec, index: int, guest: Guest) -> None:
        """Report each new guest event as it is parsed (after the guest's own observer)."""
        seen = [len(guest.events)]

        def observe(_data: bytes) -> None:
            if len(guest.events) != seen[0]:
                seen[0] = len(guest.events)
                self.phase(case, index, guest.directory, Phase.EVENT, guest,
                           detail=guest.events[-1].kind)

        guest.console.add_observer(observe)

    def _conclude(self, case: CaseSpec, index: int, guest: Guest, kernel: KernelArtifacts,
                  started: float, notes: list[str], may_defer: Callable[[bool], bool]
                  ) -> tuple[AttemptResult, CrashReport | None, Evidence | None]:
        from reprolab.run.conclude import conclude

        return conclude(self, case, index, guest, kernel, started, notes, may_defer=may_defer)

    @staticmethod
    def _console_notes(guest: Guest) -> list[str]:
        err = guest.console.write_error
        return [err] if err else []


@dataclass
class _Attempt:
    """What an attempt's steps share: who it is, where its files go, when it started."""

    case: CaseSpec
    index: int
    directory: Path
    accel: str
    notes: list[str]
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


def run_body(guest: Guest, body: Body, notes: list[str]
             ) -> tuple[BaseException | None, InfraError | None]:
    """The test body on the guest: (its own failure, the infrastructure's failure).

    A body stopped by the guest's fatal event is neither: the crash decides the outcome.
    """
    try:
        if guest.fatal_event is None:
            body(guest)
    except InfraError as exc:
        if guest.crashed_during(exc):
            notes.append(f"test body stopped by the guest's fatal event: {exc}")
            return None, None
        if isinstance(exc, CallTimeout):
            # A command the guest never answered is a hang when a fresh probe gets no
            # answer either: judged as the liveness probe judges a wedged guest after the
            # body (and captured the same way), not an infrastructure error. A guest that
            # answers the probe was merely slow for that command: that stays infra.
            probe_alive(guest, notes, after="after a command of the test body got none")
            if guest.fatal_event is not None:
                notes.append(f"test body stopped by an unresponsive guest: {exc}")
                return None, None
        return None, exc
    except Exception as exc:
        # Never discarded: an assertion that failed after a fatal event is reported with
        # the attempt (the crash decides the outcome, the assertion stays on record).
        guest.crashed_during(exc, grace=1.0)
        return exc, None
    return None, None
