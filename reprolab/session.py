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
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab.accel import AccelInfo, detect_accel
from reprolab.attempt import AttemptResult
from reprolab.case import CaseSpec
from reprolab.console import Console, ConsoleTimeout
from reprolab.errors import BootTimeout, InfraError, UserError
from reprolab.guest.handle import Guest
from reprolab.guest.spec import GuestSpec, merge_cmdline
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.paths import runtime_root
from reprolab.verdict import Observed, Outcome, classify
from reprolab.virt.connection import DEFAULT_URI, open_connection
from reprolab.virt.domain import Domain
from reprolab.virt.dump import take_vmcore
from reprolab.virt.hostfiles import HostFiles, LocalFiles, SshFiles, host_files
from reprolab.virt.reaper import Reaped, reap_orphans

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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:120] or "case"


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
        #: Files on the libvirt host: shipped there (qemu+ssh) or used in place (local).
        self.files: HostFiles = host_files(uri, self.run_dir.name)
        self._ssh_key: tuple[Path, Path] | None = None

    # -- shared resources --------------------------------------------------------------------
    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = open_connection(self.uri)
            self.reaped = reap_orphans(self._conn)
            for r in self.reaped:
                log.warning("reaped orphan domain %s: %s", r.name, r.reason)
        return self._conn

    @property
    def accel(self) -> AccelInfo:
        if self._accel is None:
            from reprolab.kvm_probe import probe_kvm

            self._accel = detect_accel(probe=lambda: probe_kvm(self.uri))
        return self._accel

    def close(self) -> None:
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

    def check_free_space(self, memory_mib: int) -> None:
        """A vmcore is as large as the guest's memory: refuse to start one that cannot be
        dumped. The error names the host, so a pool takes the host out and moves on."""
        need = (memory_mib << 20) + (min_free_gib() << 30)
        free = self.files.free_bytes()
        if free < need:
            raise InfraError(
                f"host {self.files.host}: disk full for reproductions: {free / (1 << 30):.1f} "
                f"GiB free, a {memory_mib} MiB guest's vmcore needs {need / (1 << 30):.1f} GiB"
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
        cmdline = merge_cmdline(BASE_CMDLINE, tuple((c, None) for c in image.cmdline),
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
        self.check_free_space(case.guest.memory_mib)
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
            kernel=kernel, image=image, cmdline=spec.cmdline_text(), domain_xml=domain.xml)
        console = Console(self.uri, domain.name, directory / "console.log")
        guest = Guest(domain, console, directory, silence_timeout=case.silence_timeout)
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
                    guest.ssh.wait_ready(timeout=60.0)
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
        base.mkdir(parents=True, exist_ok=True)
        name = f"attempt-{index:03d}"
        for n in range(1000):
            directory = base / (name if n == 0 else f"{name}.{n}")
            try:
                directory.mkdir()
                return directory
            except FileExistsError:
                continue
        raise InfraError(f"no free attempt directory under {base}")

    def run_attempt(self, case: CaseSpec, index: int, body: Body
                    ) -> tuple[AttemptResult, BaseException | None]:
        """Run one attempt; returns its result and the test body's own failure, if any.

        Infrastructure errors become an ``infra-error`` result, never a kernel verdict; a
        body that fails because the kernel crashed under it is a kernel result.
        """
        directory = self.attempt_dir(case, index)
        started = time.monotonic()
        started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        accel = self.accel.accel
        notes = [f"accel={accel}: {self.accel.reason}"]

        def infra(exc: InfraError | UserError) -> AttemptResult:
            if exc.detail:
                (directory / "error.txt").write_text(f"{exc}\n\n{exc.detail}\n")
            return AttemptResult(case.name, index, Outcome.INFRA_ERROR, directory, accel,
                                 error=str(exc), duration=time.monotonic() - started,
                                 notes=(*notes, f"error-type={type(exc).__name__}"))

        try:
            kernel = self.kernel(case.kernel, directory)
            image = self.image(case.guest.image, kernel)
            guest, serial = self.boot(case, directory, kernel, image)
        except InfraError as exc:
            result = replace(infra(exc), started_at=started_at)
            result.write()
            return result, None

        body_error: BaseException | None = None
        infra_error: InfraError | None = None
        try:
            if guest.fatal_event is None:
                body(guest)
        except InfraError as exc:
            if not guest.crashed_during(exc):
                infra_error = exc
        except Exception as exc:
            if not guest.crashed_during(exc, grace=1.0):
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
        except InfraError as exc:
            guest.close(keep=False, serial_log=serial, files=self.files)
            result = infra(exc)
        result = replace(result, started_at=started_at)
        result.write()
        return result, body_error

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
        if fatal is not None:
            guest.settle()
            if case.dump is not None:
                guest.domain.pause()
                suffix = "elf" if case.dump == "elf" else "kdump"
                local = guest.directory / f"vmcore.{suffix}"
                # The dump is written on the libvirt host, then brought into the artifacts.
                target = local if isinstance(self.files, LocalFiles) else self.files.scratch(
                    f"{guest.domain.name}.vmcore")
                core = take_vmcore(guest.domain.dom, target, case.dump)  # type: ignore[arg-type]
                if not self.files.fetch(target, local):
                    raise InfraError(f"vmcore {target} could not be fetched from "
                                     f"{self.files.host}")
                vmcore, vmcore_seconds = local, core.seconds
        # A kernel built with the guess unwinder marks every frame "?"; without this its
        # titles would name no frame at all.
        report = parse_log(guest.console.log_path.read_bytes(),
                           questionable_frames=kernel.config_value("UNWINDER_GUESS") == "y")
        if vmcore is not None:
            dossier = self._dossier(vmcore, kernel, guest.directory, report, notes)
        seen = Observed(
            crashed=fatal is not None or (report is not None and report.fatal),
            title=report.title if report else (fatal.line if fatal else None),
            alt_titles=tuple(report.alt_titles) if report else (),
            kind=report.kind if report else (fatal.kind if fatal else None),
            frame=report.frame if report else None,
            frames=tuple(report.frames) if report else (),
            events=tuple(e.kind for e in guest.events),
        )
        outcome = classify(case.expect, seen)
        if report is not None:
            (guest.directory / "crash-report.txt").write_text(
                f"{report.title}\n\n{report.report}\n")
        return AttemptResult(
            case=case.name,
            index=index,
            outcome=outcome,
            directory=guest.directory,
            accel=self.accel.accel,
            title=seen.title,
            kind=seen.kind,
            frame=seen.frame,
            signature=report.signature.key if report else (fatal.kind if fatal else None),
            events=tuple(guest.events),
            vmcore=vmcore,
            vmcore_seconds=vmcore_seconds,
            dossier=dossier,
            boot_seconds=guest.boot_seconds,
            duration=time.monotonic() - started,
            notes=tuple(notes),
        )

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
