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
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab.accel import AccelInfo, detect_accel
from reprolab.attempt import AttemptInterrupted, AttemptResult
from reprolab.case import CaseSpec
from reprolab.console import Console, ConsoleTimeout
from reprolab.errors import BootTimeout, InfraError, LibvirtUnavailable, UserError
from reprolab.guest.handle import Guest
from reprolab.guest.spec import GuestSpec, merge_cmdline
from reprolab.hangcapture import NMI_CMDLINE, capture_hang
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.observation import annotate_dossier, observe
from reprolab.paths import runtime_root
from reprolab.progress import Phase, ProgressEvent, emit
from reprolab.verdict import Outcome, classify
from reprolab.virt.connection import DEFAULT_URI, open_connection
from reprolab.virt.domain import Domain
from reprolab.virt.dump import take_vmcore
from reprolab.virt.hostfiles import REMOTE_RUN, HostFiles, LocalFiles, SshFiles, host_files
from reprolab.virt.reaper import Reaped, reap_orphans
from reprolab.virt.scratch import ReapedScratch, claim, reap_scratch

if TYPE_CHECKING:
    from reprolab.image.build import GuestImage

log = logging.getLogger(__name__)

#: reprolab's own command line, under the test case's (which may override any of it).
#: panic=0 keeps a panicked guest in memory to be dumped; a reboot would lose the evidence.
BASE_CMDLINE: Mapping[str, Any] = {
    "console": "ttyS0,115200",
    "panic": 0,
    "printk.time": 1,
}

Body = Callable[[Guest], None]

def min_free_gib() -> int:
    """Space kept free beyond a vmcore (REPROLAB_MIN_FREE_GIB, default 1)."""
    return int(os.environ.get("REPROLAB_MIN_FREE_GIB", "1"))


#: Lab hosts that are this machine: their forwarded guest ports are reachable directly.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _tidy_logs(result: AttemptResult) -> AttemptResult:
    """console.log as text (raw kept), no duplicate serial.log; never fails the attempt."""
    from reprolab.consolelog import tidy_attempt_logs

    try:
        notes = tidy_attempt_logs(result.directory)
    except OSError as exc:
        notes = [f"console logs left as they were: {exc}"]
    return replace(result, notes=(*result.notes, *notes)) if notes else result


def _safe(name: str) -> str:
    """One path component for a case name, whatever the name (a bundle's may be hostile):
    no separators, and no leading dot, so never ``.`` or ``..``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:120] or "case"


def _silence_timeout(case: CaseSpec) -> float | None:
    """Console silence that counts as a hang: the case's own, else its hang budget's."""
    if case.silence_timeout is not None or case.hang_budget is None:
        return case.silence_timeout
    from reprolab.triage.watchdogs import watchdog_plan

    return float(watchdog_plan(case.hang_budget).no_output_s)


class Session:
    def __init__(
        self,
        *,
        uri: str = DEFAULT_URI,
        artifacts: Path,
        keep_guest: bool = False,
        kernel_override: str | None = None,
    ) -> None:
        self.uri = uri
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
        if self._conn is None:
            return False
        try:
            if not self._conn.isAlive():
                return False
        except Exception:
            return False
        if not rpc:
            return True
        # A daemon hung in its shutdown keeps the socket open and never answers: ask from
        # a thread and give up after a few seconds.
        answered: list[bool] = []

        def ask() -> None:
            with contextlib.suppress(Exception):
                self._conn.getLibVersion()
                answered.append(True)

        probe = threading.Thread(target=ask, daemon=True)
        probe.start()
        probe.join(5.0)
        return bool(answered)

    def _typed(self, exc: InfraError) -> InfraError:
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

    def close(self) -> None:
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
        """Before any boot: every function the expectation names exists in the kernel that
        will run (UserError naming it, the kernel and a close existing name otherwise)."""
        from reprolab.kernel.symbols import check_functions

        names = [n for n in (case.expect.frame, case.expect.in_stack) if n]
        if names:
            check_functions(self.kernel(case.kernel, artifacts_dir), names,
                            where=f"test case {case.name}: expect")

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

    def check_free_space(self, memory_mib: int, *, dump: bool = True) -> None:
        """A vmcore is as large as the guest's memory: refuse to start one that cannot be
        dumped. Measured where the dump lands: the artifacts directory (and, for a lab
        host, its scratch directory the dump is written to first). The error names the
        host, so a pool takes the host out and moves on."""
        need = ((memory_mib << 20) if dump else 0) + (min_free_gib() << 30)
        places: list[tuple[str, Path, int]] = []
        self.artifacts.mkdir(parents=True, exist_ok=True)
        places.append(("localhost", self.artifacts, shutil.disk_usage(self.artifacts).free))
        if not isinstance(self.files, LocalFiles):
            places.append((self.files.host, Path(str(REMOTE_RUN)), self.files.free_bytes()))
        for host, where, free in places:
            if free < need:
                raise InfraError(
                    f"host {host}: disk full for reproductions at {where}: "
                    f"{free / (1 << 30):.2f} GiB free, a {memory_mib} MiB guest "
                    f"{'and its vmcore ' if dump else ''}needs {need / (1 << 30):.2f} GiB"
                )

    # -- one guest ---------------------------------------------------------------------------
    def guest_spec(self, case: CaseSpec, kernel: KernelArtifacts, image: GuestImage
                   ) -> GuestSpec:
        opts = case.guest
        extra: dict[str, Any] = {}
        if case.hang_budget is not None:
            from reprolab.triage.watchdogs import watchdog_cmdline

            extra = dict(watchdog_cmdline(case.hang_budget))
            extra.pop("no_output_timeout", None)
        cmdline = merge_cmdline(BASE_CMDLINE, NMI_CMDLINE,
                                tuple((c, None) for c in image.cmdline),
                                extra, dict(case.cmdline))
        fw_cfg: tuple[tuple[str, Path], ...] = ()
        port = None
        if image.has_ssh:
            from reprolab.ssh import free_port

            port = free_port()
            fw_cfg = (("opt/reprolab/authorized_keys", self.files.ship(self.ssh_key()[1])),)
        disk = None
        if image.disk is not None:
            from reprolab.image.build import make_overlay

            if isinstance(self.files, LocalFiles):
                disk = make_overlay(image, self.run_dir)
            else:
                disk = self.files.overlay(image.disk, f"overlay-{secrets.token_hex(4)}.qcow2")
        return GuestSpec(
            kernel=self.files.ship(kernel.image),
            initrd=self.files.ship(image.initrd) if image.initrd is not None else None,
            cmdline=cmdline,
            vcpus=opts.vcpus,
            memory_mib=opts.memory_mib,
            cpu_model=opts.cpu_model or ("host" if self.accel.accel == "kvm" else "qemu64"),
            nested=opts.nested,
            cpu_features=opts.cpu_features,
            accel=self.accel.accel,
            panic_device=opts.panic_device,
            watchdog=opts.watchdog,
            disk=disk,
            ssh_port=port,
            fw_cfg=fw_cfg,
            extra_devices=opts.extra_devices,
        )

    def boot(self, case: CaseSpec, directory: Path, kernel: KernelArtifacts,
             image: GuestImage) -> tuple[Guest, Path]:
        """Start the guest paused, attach the console, resume, wait for the ready marker.

        A kernel that crashes during boot returns normally (the crash is a verdict); one
        that prints nothing useful until the timeout raises :class:`BootTimeout`.
        """
        self.check_free_space(case.guest.memory_mib, dump=case.dump is not None)
        spec = self.guest_spec(case, kernel, image)
        serial = self.files.scratch(f"{directory.name}-{secrets.token_hex(3)}.serial.log")
        domain = Domain.start(self.conn, spec, label=_safe(case.name.split("::")[-1]),
                              test=case.name, serial_log=serial,
                              autodestroy=not self.keep_guest)
        (directory / "domain.xml").write_text(domain.xml)
        (directory / "cmdline.txt").write_text(spec.cmdline_text() + "\n")
        from reprolab.replay import write_attempt_bundle_safely

        write_attempt_bundle_safely(
            directory, case=case, kernel_spec=self.kernel_override or case.kernel,
            kernel=kernel, image=image, cmdline=spec.cmdline_text(), domain_xml=domain.xml,
            portable=self.portable_bundles)
        console = Console(self.uri, domain.name, directory / "console.log")
        guest = Guest(domain, console, directory, silence_timeout=_silence_timeout(case))
        try:
            console.attach()
            t0 = time.monotonic()
            domain.resume()
            guest.mark_started(t0)
            try:
                console.wait_for(re.escape(image.ready_marker), case.boot_timeout)
            except InfraError as exc:
                if guest.crashed_during(exc):
                    return guest, serial
                if isinstance(exc, ConsoleTimeout):
                    raise BootTimeout(
                        f"{case.name}: guest {domain.name} did not reach its ready marker "
                        f"in {case.boot_timeout:.0f} s (console: {directory / 'console.log'})",
                        detail=console.tail(),
                    ) from exc
                raise
            guest.ready = True
            guest.boot_seconds = time.monotonic() - t0
            if spec.ssh_port is not None:
                from reprolab.ssh import SshChannel

                assert image.host_key is not None
                gateway = None
                if isinstance(self.files, SshFiles) and self.files.host not in LOOPBACK:
                    gateway = (self.files.host, self.files.port, self.files.user)
                guest.ssh = SshChannel("127.0.0.1", spec.ssh_port, self.ssh_key()[0],
                                       image.host_key, gateway=gateway)
                try:
                    ssh = guest.ssh
                    guest.watched(lambda: ssh.wait_ready(timeout=60.0), 75.0,
                                  f"SSH to guest {domain.name}")
                except InfraError as exc:
                    if not guest.crashed_during(exc):
                        raise InfraError(
                            f"{case.name}: guest {domain.name} booted but SSH on 127.0.0.1:"
                            f"{spec.ssh_port} never answered: {exc}",
                            detail=console.tail(),
                        ) from exc
        except BaseException:
            guest.close(keep=False, serial_log=serial, files=self.files)
            raise
        return guest, serial

    # -- one attempt -------------------------------------------------------------------------
    def attempt_dir(self, case: CaseSpec, index: int) -> Path:
        """A new directory for the attempt; an earlier one of the same name is never reused."""
        base = self.artifacts / _safe(case.name)
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
        try:
            return self._run_attempt(case, index, body)
        except AttemptInterrupted:
            raise
        except KeyboardInterrupt as exc:
            raise AttemptInterrupted(self._interrupted(case, index)) from exc

    def _interrupted(self, case: CaseSpec, index: int) -> AttemptResult:
        directory = self._attempt_dir or self.attempt_dir(case, index)
        result = AttemptResult(case.name, index, Outcome.INFRA_ERROR, directory,
                               self._accel.accel if self._accel else "unknown",
                               error="interrupted (SIGINT): no kernel verdict",
                               error_type="Interrupted",
                               started_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
        result.write()
        return result

    def _run_attempt(self, case: CaseSpec, index: int, body: Body
                     ) -> tuple[AttemptResult, BaseException | None]:
        """The attempt itself: see :meth:`run_attempt`.

        Infrastructure errors become an ``infra-error`` result, never a kernel verdict; a
        body that fails because the kernel crashed under it is a kernel result.
        """
        directory = self.attempt_dir(case, index)
        self._phase(case, index, directory, Phase.BUILDING)
        started = time.monotonic()
        started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        accel = self.accel.accel
        notes = [f"accel={accel}: {self.accel.reason}"]

        def infra(exc: InfraError | UserError) -> AttemptResult:
            if isinstance(exc, InfraError):
                exc = self._typed(exc)
            # Always written: a boot that timed out before printing anything has no detail.
            (directory / "error.txt").write_text(f"{exc}\n\n{exc.detail or ''}\n")
            return AttemptResult(case.name, index, Outcome.INFRA_ERROR, directory, accel,
                                 error=str(exc), duration=time.monotonic() - started,
                                 notes=tuple(notes), error_type=type(exc).__name__)

        try:
            kernel = self.kernel(case.kernel, directory)
            image = self.image(case.guest.image, kernel)
            self._phase(case, index, directory, Phase.BOOTING)
            guest, serial = self.boot(case, directory, kernel, image)
        except InfraError as exc:
            result = replace(infra(exc), started_at=started_at)
            result.write()
            self._phase(case, index, directory, Phase.DONE, detail=str(result.outcome))
            return result, None
        except UserError:
            # Input to fix (a recipe, a patch): nothing ran, so no attempt directory stays.
            with contextlib.suppress(OSError):
                directory.rmdir()
            raise
        self._watch_events(case, index, guest)
        from reprolab.vcpustats import start_sampling  # issue 17: L0 vCPU thread times
        start_sampling(guest)  # issue 17
        self._phase(case, index, directory, Phase.RUNNING, guest)

        body_error: BaseException | None = None
        infra_error: InfraError | None = None
        try:
            if guest.fatal_event is None:
                body(guest)
        except InfraError as exc:
            if guest.crashed_during(exc):
                notes.append(f"test body stopped by the guest's fatal event: {exc}")
            else:
                infra_error = exc
        except Exception as exc:
            # Never discarded: an assertion that failed after a fatal event is reported with
            # the attempt (the crash decides the outcome, the assertion stays on record).
            guest.crashed_during(exc, grace=1.0)
            body_error = exc
        except BaseException:  # KeyboardInterrupt: keep the evidence, then stop
            guest.close(keep=False, serial_log=serial, files=self.files)
            raise

        try:
            if infra_error is not None:
                guest.close(keep=False, serial_log=serial, files=self.files)
                result = infra(infra_error)
            else:
                result = self._conclude(case, index, guest, kernel, started, notes)
                guest.close(keep=self.keep_guest, serial_log=serial, files=self.files)
            if body_error is not None:
                result = replace(result, body_error=f"{type(body_error).__name__}: {body_error}")
        except InfraError as exc:
            guest.close(keep=False, serial_log=serial, files=self.files)
            result = infra(exc)
        except BaseException:  # Ctrl-C during the dump: the evidence so far, then stop
            guest.close(keep=False, serial_log=serial, files=self.files)
            raise
        result = replace(result, started_at=started_at,
                         notes=(*result.notes, *guest.notes, *self._console_notes(guest)))
        result = _tidy_logs(result)
        result.write()
        from reprolab.replay import record_attempt_verdict

        record_attempt_verdict(directory, result.to_json())
        self._phase(case, index, directory, Phase.DONE, guest, detail=str(result.outcome))
        return result, body_error

    @staticmethod
    def _phase(case: CaseSpec, index: int, directory: Path, phase: Phase,
               guest: Guest | None = None, detail: str = "") -> None:
        events = tuple(e.kind for e in guest.events) if guest is not None else ()
        emit(ProgressEvent(case.name, index, phase, directory, events, detail))

    def _watch_events(self, case: CaseSpec, index: int, guest: Guest) -> None:
        """Report each new guest event as it is parsed (after the guest's own observer)."""
        seen = [len(guest.events)]

        def observe(_data: bytes) -> None:
            if len(guest.events) != seen[0]:
                seen[0] = len(guest.events)
                self._phase(case, index, guest.directory, Phase.EVENT, guest,
                            detail=guest.events[-1].kind)

        guest.console.add_observer(observe)

    def _conclude(self, case: CaseSpec, index: int, guest: Guest, kernel: KernelArtifacts,
                  started: float, notes: list[str]) -> AttemptResult:
        from reprolab.triage.report import parse_log

        # Pick up anything still in flight (a report may still be printing).
        with contextlib.suppress(InfraError):
            guest.poll(0.5)
        fatal = guest.fatal_event
        vmcore = None
        vmcore_seconds = None
        dossier = None
        dump_error = None
        if fatal is not None:
            self._phase(case, index, guest.directory, Phase.CRASHED, guest, detail=fatal.kind)
            capture_hang(guest, notes)
            guest.settle()
            if case.dump is not None:
                self._phase(case, index, guest.directory, Phase.DUMPING, guest)
                vmcore, vmcore_seconds, dump_error = self._dump(case, guest)
                if dump_error is not None:
                    notes.append(f"no vmcore: {dump_error}")
        self._phase(case, index, guest.directory, Phase.TRIAGING, guest)
        # A kernel built with the guess unwinder marks every frame "?"; without this its
        # titles would name no frame at all.
        report = parse_log(guest.console.log_path.read_bytes(),
                           questionable_frames=kernel.config_value("UNWINDER_GUESS") == "y")
        if vmcore is not None:
            # The verdict may need the dossier (the vmcore's log and stacks), so it is
            # written before the verdict, not in the background.
            dossier = self._dossier(vmcore, kernel, guest.directory, report, notes)
        obs = observe(guest, report, dossier, notes)
        seen = obs.seen
        outcome = classify(case.expect, seen)
        matched_in = case.expect.found_in(seen) if outcome is Outcome.REPRODUCED else None
        annotate_dossier(dossier, matched_in, case.expect.describe())
        from reprolab.layers import conclude_attempt  # issue 17: layers, spinning vCPU
        conclude_attempt(guest, dossier, notes)  # issue 17
        if report is not None:
            extra = "".join(f"{k}: {v}\n" for k, v in (
                ("stuck in", report.stuck_in), ("fatal", report.fatal_title)) if v)
            (guest.directory / "crash-report.txt").write_text(
                f"{report.title}\n{extra}\n{report.report}\n")
        return AttemptResult(
            case=case.name,
            index=index,
            outcome=outcome,
            directory=guest.directory,
            accel=self.accel.accel,
            title=seen.title,
            kind=seen.kind,
            frame=seen.frame,
            signature=obs.signature,
            events=tuple(guest.events),
            vmcore=vmcore,
            vmcore_seconds=vmcore_seconds,
            dossier=dossier,
            boot_seconds=guest.boot_seconds,
            duration=time.monotonic() - started,
            notes=tuple(notes),
            dump_error=dump_error,
            stuck_in=report.stuck_in if report else None,
            fatal_title=report.fatal_title if report else None,
            fatal_kind=report.fatal_kind if report else None,
            hang_seconds=guest.hang_seconds if outcome is Outcome.HANG else None,
            matched_in=matched_in,
        )

    def _dump(self, case: CaseSpec, guest: Guest) -> tuple[Path | None, float | None, str | None]:
        """Dump the guest into the artifacts: (vmcore, seconds, why it failed).

        The console already gave the kernel verdict; a dump that fails (a full disk, QEMU
        or libvirtd gone) loses the vmcore and says why, never the verdict. A partial
        vmcore is removed: on a full disk its space is what the reports still need.
        """
        assert case.dump is not None
        suffix = "elf" if case.dump == "elf" else "kdump"
        local = guest.directory / f"vmcore.{suffix}"
        # The dump is written on the libvirt host, then brought into the artifacts.
        target = local
        try:
            guest.domain.pause()
            if not isinstance(self.files, LocalFiles):
                target = self.files.scratch(f"{guest.domain.name}.vmcore")
            core = take_vmcore(guest.domain.dom, target, case.dump)  # type: ignore[arg-type]
            if case.dump == "elf" and core.size < (case.guest.memory_mib << 20):
                # An ELF memory dump holds all of RAM: a shorter one was cut off (a disk
                # that filled under it) even if libvirt reported success.
                raise InfraError(f"vmcore {target} truncated: {core.size} bytes for a "
                                 f"{case.guest.memory_mib} MiB guest")
            if not self.files.fetch(target, local):
                raise InfraError(f"vmcore {target} could not be fetched from "
                                 f"{self.files.host}")
        except InfraError as exc:
            local.unlink(missing_ok=True)
            if target != local:
                self.files.remove(target)
            return None, None, str(self._typed(exc))
        return local, core.seconds, None

    @staticmethod
    def _console_notes(guest: Guest) -> list[str]:
        err = guest.console.write_error
        return [err] if err else []

    def _dossier(self, vmcore: Path, kernel: KernelArtifacts, directory: Path,
                 report: Any, notes: list[str]) -> Path | None:
        """Triage the vmcore; a failure here loses the dossier, never the verdict."""
        try:
            from reprolab.triage.vmcore import write_dossier

            return write_dossier(vmcore, kernel.vmlinux, directory, console_report=report)
        except (UserError, InfraError) as exc:
            notes.append(f"vmcore triage failed: {exc}")
        except Exception as exc:
            log.exception("vmcore triage crashed")
            notes.append(f"vmcore triage crashed: {type(exc).__name__}: {exc}")
        return None
