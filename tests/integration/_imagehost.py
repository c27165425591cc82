"""Test helper: boot a GuestImage as a transient libvirt domain, SSH and console ready.

A stand-in for the core's guest layer while it is being written (to be replaced by it): a
transient domain (type 'qemu', direct kernel boot, AUTODESTROY), the serial console logged to
a file and reachable on a pty, user-mode networking with restrict=on and one port forwarded
on 127.0.0.1, and the per-run authorized key passed through fw_cfg.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import libvirt
import pexpect
import pexpect.fdpexpect

from reprolab.errors import BootTimeout, InfraError
from reprolab.image.build import GuestImage, make_overlay
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.paths import runtime_root
from reprolab.ssh import SshChannel, free_port, generate_keypair

URI = "qemu:///system"
BASE_CMDLINE = ("console=ttyS0,115200", "panic=-1", "quiet", "loglevel=4")


@dataclass
class Guest:
    name: str
    dom: Any
    port: int
    run_dir: Path
    console_log: Path
    pty: str
    ssh: SshChannel | None
    boot_seconds: float

    def console_text(self) -> str:
        return self.console_log.read_text(errors="replace").replace("\r", "")

    def console_send(self, command: str, timeout: float = 60.0) -> None:
        """Type ``command`` on the serial shell once it answers, without waiting for it."""
        fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY)
        try:
            child = pexpect.fdpexpect.fdspawn(fd, timeout=timeout, encoding="utf-8")
            _sync(child, timeout)
            child.send(f"{command}\r")
        finally:
            os.close(fd)

    def console_run(self, command: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run ``command`` on the serial root shell; (exit status, output)."""
        fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY)
        try:
            child = pexpect.fdpexpect.fdspawn(fd, timeout=timeout, encoding="utf-8")
            _sync(child, timeout)
            tag = uuid.uuid4().hex[:8]
            # $((...)) expands only in the output, so the echoed input never matches.
            child.send(f"echo S$((6*7)){tag}; {command}; echo E$((6*7)){tag}$?\r")
            child.expect(f"S42{tag}\r*\n")
            child.expect(f"E42{tag}(\\d+)")
            return int(child.match.group(1)), str(child.before).replace("\r", "")
        finally:
            os.close(fd)


def _sync(child: Any, timeout: float) -> None:
    """Probe until the shell answers: input typed while a shell (re)starts is flushed.

    agetty and busybox init flush the tty when they start the next shell, and busybox ash
    asks the terminal for the cursor position (ESC[6n) before its first prompt, so a
    command sent blind right after boot or after the shell exited can vanish.
    """
    deadline = time.monotonic() + timeout
    while True:
        tag = uuid.uuid4().hex[:8]
        child.send(f"\recho P$((6*7)){tag}\r")
        try:
            child.expect(f"P42{tag}", timeout=3)
            return
        except pexpect.TIMEOUT:
            if time.monotonic() > deadline:
                raise


def domain_xml(
    name: str, kernel: KernelArtifacts, image: GuestImage, *, port: int, pubkey: Path,
    console_log: Path, overlay: Path | None, memory_mb: int, vcpus: int,
) -> str:
    cmdline = " ".join((*BASE_CMDLINE, *image.cmdline))
    initrd = f"<initrd>{escape(str(image.initrd))}</initrd>" if image.initrd else ""
    disk = ""
    if overlay is not None:
        disk = (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file={quoteattr(str(overlay))}/><target dev='vda' bus='virtio'/></disk>"
        )
    args = [
        "-netdev", f"user,id=rlnet,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=rlnet,bus=pcie.0,addr=0x10",
        "-fw_cfg", f"name=opt/reprolab/authorized_keys,file={pubkey}",
    ]
    qargs = "".join(f"<qemu:arg value={quoteattr(a)}/>" for a in args)
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mb}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(kernel.image))}</kernel>
    {initrd}
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {disk}
    <serial type='pty'><log file={quoteattr(str(console_log))} append='off'/>
      <target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none' model='dac'/>
  <qemu:commandline>{qargs}</qemu:commandline>
</domain>"""


def wait_marker(log: Path, marker: str, timeout: float, dom: Any, *, count: int = 1) -> None:
    """Wait until ``marker`` stands alone on ``count`` console lines (count=2: after a reboot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            text = log.read_text(errors="replace").replace("\r", "")
            if text.count(f"\n{marker}\n") >= count:
                return
        if not dom.isActive():
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    # The run directory goes with the guest: the failure itself must carry what boot did.
    last = "\n".join(tail.replace("\r", "").splitlines()[-25:])
    raise BootTimeout(f"no {marker} on the console within {timeout:.0f} s; console tail:\n"
                      f"{last}", detail=tail)


@contextmanager
def boot(
    image: GuestImage, kernel: KernelArtifacts, *, memory_mb: int = 1024, vcpus: int = 2,
    timeout: float = 240.0, ssh: bool = True,
) -> Iterator[Guest]:
    name = f"rl-img-{image.recipe}-{uuid.uuid4().hex[:8]}"
    run_dir = runtime_root() / name
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o755)
    conn = libvirt.open(URI)
    dom = None
    guest: Guest | None = None
    try:
        key, _pub = generate_keypair(run_dir / "ssh")
        (run_dir / "ssh").chmod(0o755)
        overlay = make_overlay(image, run_dir) if image.disk else None
        console_log = run_dir / "console.log"
        port = free_port()
        xml = domain_xml(
            name, kernel, image, port=port, pubkey=Path(str(key) + ".pub"),
            console_log=console_log, overlay=overlay, memory_mb=memory_mb, vcpus=vcpus,
        )
        start = time.monotonic()
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
        wait_marker(console_log, image.ready_marker, timeout, dom)
        channel = None
        if ssh and image.has_ssh and image.host_key:
            channel = SshChannel("127.0.0.1", port, key, image.host_key)
            channel.wait_ready(timeout=60, console_log=console_log)
        boot_seconds = time.monotonic() - start
        from lxml import etree

        live = etree.fromstring(dom.XMLDesc(0).encode())
        source = live.find("devices/serial/source")
        pty = source.get("path", "") if source is not None else ""
        guest = Guest(name, dom, port, run_dir, console_log, pty, channel, boot_seconds)
        yield guest
    finally:
        if guest is not None and guest.ssh is not None:
            guest.ssh.close()
        if dom is not None:
            with suppress(libvirt.libvirtError):
                dom.destroy()
        conn.close()
        if os.environ.get("REPROLAB_KEEP_RUNS") != "1":
            shutil.rmtree(run_dir, ignore_errors=True)


def check_no_leftovers() -> None:
    conn = libvirt.open(URI)
    try:
        names = [d.name() for d in conn.listAllDomains() if d.name().startswith("rl-img-")]
    finally:
        conn.close()
    if names:
        raise InfraError(f"rl-img domains left running: {names}")
