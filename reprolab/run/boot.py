"""Domain up, console attached, SSH ready: one path for a cold boot and a snapshot restore.

A guest is always started paused, so the console is attached before its first byte (a pty
or a socket drops what it prints while nobody reads it); then it is resumed, waits for the
image's ready marker (a cold boot only: a restored guest was saved after it), and its SSH
channel is opened, through the lab host when the guest runs on one. A kernel that crashes
on the way is a verdict, not an infrastructure error: every wait asks the guest first
whether its fatal event caused the failure.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab import console_socket
from reprolab.case import CaseSpec
from reprolab.console import Console, ConsoleTimeout
from reprolab.errors import BootTimeout, HostError, InfraError
from reprolab.guest.handle import Guest
from reprolab.guest.spec import GuestSpec, merge_cmdline
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.run.hangcapture import NMI_CMDLINE
from reprolab.virt.domain import Domain
from reprolab.virt.hostfiles import REMOTE_RUN, LocalFiles, SshFiles

if TYPE_CHECKING:
    from reprolab.image.build import GuestImage
    from reprolab.run.session import Session

#: reprolab's own command line, under the test case's (which may override any of it).
#: panic=0 keeps a panicked guest in memory to be dumped; a reboot would lose the evidence.
BASE_CMDLINE: Mapping[str, Any] = {
    "console": "ttyS0,115200",
    "panic": 0,
    "printk.time": 1,
}

#: Lab hosts that are this machine: their forwarded guest ports are reachable directly.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class SshTarget:
    """Where the guest's SSH server listens (a forwarded port) and the key it proves."""

    port: int
    host_key: str


def safe_name(name: str) -> str:
    """One path component for a case name, whatever the name (a bundle's may be hostile):
    no separators, and no leading dot, so never ``.`` or ``..``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:120] or "case"


def silence_timeout(case: CaseSpec) -> float | None:
    """Console silence that counts as a hang: the case's own, else its hang budget's."""
    if case.silence_timeout is not None or case.hang_budget is None:
        return case.silence_timeout
    from reprolab.guest.watchdogs import watchdog_plan

    return float(watchdog_plan(case.hang_budget).no_output_s)


def guest_spec(session: Session, case: CaseSpec, kernel: KernelArtifacts, image: GuestImage
               ) -> GuestSpec:
    """The guest the case asks for, on this session's host, with its files shipped there."""
    opts = case.guest
    extra: Mapping[str, Any] = {}
    if case.hang_budget is not None:
        from reprolab.guest.watchdogs import kernel_cmdline

        extra = kernel_cmdline(case.hang_budget)
    cmdline = merge_cmdline(BASE_CMDLINE, NMI_CMDLINE,
                            tuple((c, None) for c in image.cmdline),
                            extra, dict(case.cmdline))
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    port = None
    if image.has_ssh:
        from reprolab.ssh import free_port

        port = free_port()
        fw_cfg = (("opt/reprolab/authorized_keys", session.files.ship(session.ssh_key()[1])),)
    disk = None
    if image.disk is not None:
        from reprolab.image.build import make_overlay

        if isinstance(session.files, LocalFiles):
            disk = make_overlay(image, session.run_dir)
        else:
            disk = session.files.overlay(image.disk, f"overlay-{secrets.token_hex(4)}.qcow2")
    accel = session.accel.accel
    boot = kernel.image
    if isinstance(session.files, LocalFiles):
        # Not decompressed under TCG (see kernel/pvh.py); a lab host gets the small bzImage.
        from reprolab.kernel.pvh import boot_image

        boot = boot_image(kernel)
    return GuestSpec(
        kernel=session.files.ship(boot),
        initrd=session.files.ship(image.initrd) if image.initrd is not None else None,
        cmdline=cmdline,
        vcpus=opts.vcpus,
        memory_mib=opts.memory_mib,
        cpu_model=opts.cpu_model or ("host" if accel == "kvm" else "qemu64"),
        nested=opts.nested,
        cpu_features=opts.cpu_features,
        accel=accel,
        panic_device=opts.panic_device,
        watchdog=opts.watchdog,
        disk=disk,
        ssh_port=port,
        fw_cfg=fw_cfg,
        extra_devices=opts.extra_devices,
    )


def min_free_gib() -> int:
    """Space kept free beyond a vmcore (REPROLAB_MIN_FREE_GIB, default 1)."""
    return int(os.environ.get("REPROLAB_MIN_FREE_GIB", "1"))


def check_free_space(session: Session, memory_mib: int, *, dump: bool = True) -> None:
    """A vmcore is as large as the guest's memory: refuse to start one that cannot be
    dumped. Measured where the dump lands: the artifacts directory (and, for a lab
    host, its scratch directory the dump is written to first). The error names the
    host, so a pool takes the host out and moves on."""
    need = ((memory_mib << 20) if dump else 0) + (min_free_gib() << 30)
    places: list[tuple[str, Path, int]] = []
    session.artifacts.mkdir(parents=True, exist_ok=True)
    places.append(("localhost", session.artifacts, shutil.disk_usage(session.artifacts).free))
    if not isinstance(session.files, LocalFiles):
        places.append((session.files.host, Path(str(REMOTE_RUN)), session.files.free_bytes()))
    for host, where, free in places:
        if free < need:
            raise HostError(
                f"host {host}: disk full for reproductions at {where}: "
                f"{free / (1 << 30):.2f} GiB free, a {memory_mib} MiB guest "
                f"{'and its vmcore ' if dump else ''}needs {need / (1 << 30):.2f} GiB"
            )


@dataclass(frozen=True)
class Started:
    """A cold guest's domain, started paused, with what it was started from."""

    domain: Domain
    spec: GuestSpec
    #: libvirt's copy of its serial console, on the host it runs on.
    serial: Path


def start_paused(session: Session, case: CaseSpec, kernel: KernelArtifacts,
                 image: GuestImage, attempt: str, conn: Any = None) -> Started:
    """The attempt's domain, started paused: everything of a cold boot before its console
    is attached, and nothing that needs the attempt's directory (so it can run ahead of
    the attempt, :mod:`reprolab.run.startahead`). ``attempt`` names its serial log;
    ``conn`` is the session's connection, taken by the caller when this runs in another
    thread (which must not reconnect behind the session's back)."""
    check_free_space(session, case.guest.memory_mib, dump=case.dump is not None)
    spec = session.guest_spec(case, kernel, image)
    serial = session.files.scratch(f"{attempt}-{secrets.token_hex(3)}.serial.log")
    domain = Domain.start(session.conn if conn is None else conn, spec,
                          label=safe_name(case.name.split("::")[-1]),
                          test=case.name, serial_log=serial,
                          console_socket=_console_socket(session),
                          autodestroy=not session.keep_guest)
    return Started(domain, spec, serial)


def cold_boot(session: Session, case: CaseSpec, directory: Path, kernel: KernelArtifacts,
              image: GuestImage, *, ahead: Started | None = None,
              console: Console | None = None,
              on_started: Callable[[], None] | None = None) -> tuple[Guest, Path]:
    """Start the guest paused (or take ``ahead``, started so already, with its attached
    ``console``), write what replays it, then :func:`bring_up`. ``on_started`` runs once
    the domain exists, before it runs: the next attempt's guest is started behind it.

    A kernel that crashes during boot returns normally (the crash is a verdict); one
    that prints nothing useful until the timeout raises :class:`BootTimeout`.
    """
    started = ahead or start_paused(session, case, kernel, image, directory.name)
    if on_started is not None:
        on_started()
    domain, spec = started.domain, started.spec
    (directory / "domain.xml").write_text(domain.xml)
    (directory / "cmdline.txt").write_text(spec.cmdline_text() + "\n")
    from reprolab.replay import write_attempt_bundle_safely

    write_attempt_bundle_safely(
        directory, case=case, kernel_spec=session.kernel_override or case.kernel,
        kernel=kernel, image=image, cmdline=spec.cmdline_text(), domain_xml=domain.xml,
        portable=session.portable_bundles)
    ssh = None
    if spec.ssh_port is not None:
        assert image.host_key is not None
        ssh = SshTarget(spec.ssh_port, image.host_key)
    guest = bring_up(session, case, domain, directory, started.serial,
                     ready_marker=image.ready_marker, ssh=ssh, console=console)
    if guest.ready and image.shell_at_ready:
        guest.console.assume_synced()
    return guest, started.serial


def _console_socket(session: Session) -> Path | None:
    """Where a guest on this host gets its console socket; None (a pty, read through
    ``virsh console``) for one on a lab host, whose socket the harness could not reach."""
    if not isinstance(session.files, LocalFiles):
        return None
    return console_socket.usable_path(
        session.files.scratch(f"{secrets.token_hex(4)}.console.sock"))


def bring_up(session: Session, case: CaseSpec, domain: Domain, directory: Path, serial: Path,
             *, ready_marker: str | None, ssh: SshTarget | None, t0: float | None = None,
             console: Console | None = None) -> Guest:
    """Attach the console to the paused ``domain``, resume it, wait until it is usable.

    ``ready_marker`` is waited for on the console (None: the guest is already past it, as a
    restored one is); ``t0`` is when the guest's clock starts (default: at resume);
    ``console``: one already attached to the paused domain (its log moves into
    ``directory``). On any failure the guest is closed before the error goes on.
    """
    attached = console is not None
    if console is None:
        console = Console(session.uri, domain.name, directory / "console.log",
                          socket=domain.console_socket)
    else:
        console.move_log(directory / "console.log")
    guest = Guest(domain, console, directory, silence_timeout=silence_timeout(case))
    try:
        if not attached:
            console.attach()
        start = time.monotonic() if t0 is None else t0
        domain.resume()
        guest.mark_started(start)
        if ready_marker is not None and not _reach_ready(guest, case, ready_marker):
            return guest
        guest.ready = True
        guest.boot_seconds = time.monotonic() - start
        if ssh is not None:
            _open_ssh(session, case, guest, ssh)
    except BaseException:
        guest.close(keep=False, serial_log=serial, files=session.files)
        raise
    return guest


def _reach_ready(guest: Guest, case: CaseSpec, marker: str) -> bool:
    """Wait for the ready marker: False when the kernel crashed first (a verdict)."""
    try:
        guest.console.wait_for(re.escape(marker), case.boot_timeout)
    except InfraError as exc:
        if guest.crashed_during(exc):
            return False
        if isinstance(exc, ConsoleTimeout):
            raise BootTimeout(
                f"{case.name}: guest {guest.domain.name} did not reach its ready marker "
                f"in {case.boot_timeout:.0f} s (console: {guest.directory / 'console.log'})",
                detail=guest.console.tail(),
            ) from exc
        raise
    return True


def _open_ssh(session: Session, case: CaseSpec, guest: Guest, target: SshTarget) -> None:
    """The guest's SSH channel, through the lab host when the guest runs on one."""
    from reprolab.ssh import SshChannel

    files = session.files
    gateway = None
    if isinstance(files, SshFiles) and files.host not in LOOPBACK:
        gateway = (files.host, files.port, files.user)
    guest.ssh = SshChannel("127.0.0.1", target.port, session.ssh_key()[0], target.host_key,
                           gateway=gateway)
    try:
        ssh = guest.ssh
        guest.watched(lambda: ssh.wait_ready(timeout=60.0), 75.0,
                      f"SSH to guest {guest.domain.name}")
    except InfraError as exc:
        if not guest.crashed_during(exc):
            raise InfraError(
                f"{case.name}: guest {guest.domain.name} booted but SSH on 127.0.0.1:"
                f"{target.port} never answered: {exc}",
                detail=guest.console.tail(),
            ) from exc
