"""A transient domain whose life is tied to the run that started it.

Domains are created with ``VIR_DOMAIN_START_AUTODESTROY`` (libvirtd destroys them when the
creating connection closes, so a SIGKILLed runner leaks nothing) and ``START_PAUSED`` (so
the console can be attached before the first byte is printed: a pty or a socket drops what
it prints while nobody reads it).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from reprolab.errors import GuestDied, InfraError
from reprolab.virt.domain_xml import console_socket_of, render_domain_xml
from reprolab.virt.machine import GuestSpec
from reprolab.virt.metadata import NS, PREFIX, RunTag

#: cgroup v1's smallest cpu.shares (v2: cpu.weight, whose smallest is 1).
MIN_CPU_SHARES = 2

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
_PAUSE_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "ioerror",
    libvirt.VIR_DOMAIN_PAUSED_USER: "user",
    libvirt.VIR_DOMAIN_PAUSED_DUMP: "dump",
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting-up",
}

#: Why a domain is shut off: "shutdown" (the guest powered off) from "destroyed" (someone
#: destroyed it) from "crashed"/"failed" (QEMU died or never started).
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
}


@dataclass(frozen=True)
class DomainState:
    state: str
    reason: str

    @property
    def crashed(self) -> bool:
        """pvpanic fired: the guest kernel told the host it panicked."""
        return self.state == "crashed" or (self.state == "paused" and self.reason == "crashed")

    @property
    def watchdog_fired(self) -> bool:
        return self.state == "paused" and self.reason == "watchdog"

    @property
    def gone(self) -> bool:
        return self.state in ("shutoff", "nostate")

    def __str__(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason else self.state


def unique_name(label: str) -> str:
    """A domain name no other run on the host will pick: label, pid and random bits."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:40] or "guest"
    return f"rl-{clean}-{os.getpid()}-{secrets.token_hex(3)}"


class Domain:
    """A running transient domain."""

    def __init__(self, conn: Any, dom: Any, name: str, xml: str) -> None:
        self.conn = conn
        self.dom = dom
        self.name = name
        self.xml = xml

    @classmethod
    def start(
        cls,
        conn: Any,
        spec: GuestSpec,
        *,
        label: str,
        test: str = "",
        serial_log: Path | None = None,
        console_socket: Path | None = None,
        autodestroy: bool = True,
        paused: bool = True,
    ) -> Domain:
        """Create the transient domain (its serial console on ``console_socket`` when given,
        else on a pty: see :func:`render_domain_xml`).

        ``autodestroy=False`` is only for ``--reprolab-keep-guest`` (the user asked for the
        guest to outlive the run; the next run's reaper removes it) and for libvirt's test
        driver, which supports neither flag.
        """
        name = unique_name(label)
        xml = render_domain_xml(spec, name=name, tag=RunTag.current(test), serial_log=serial_log,
                                console_socket=console_socket)
        flags = 0
        if autodestroy:
            flags |= libvirt.VIR_DOMAIN_START_AUTODESTROY
        if paused:
            flags |= libvirt.VIR_DOMAIN_START_PAUSED
        try:
            dom = conn.createXML(xml, flags)
        except libvirt.libvirtError as exc:
            first = str(exc).splitlines()[0]
            raise InfraError(f"libvirt could not start domain {name}: {first}") from exc
        return cls(conn, dom, name, xml)

    @property
    def console_socket(self) -> Path | None:
        """Where the serial console listens, None when it is a pty (``virsh console``)."""
        return console_socket_of(self.xml)

    @classmethod
    def restore(cls, conn: Any, path: Path, name: str, xml: str) -> Domain:
        """Restore a domain saved by :meth:`save`, paused (so the console is attached before
        it runs again). ``xml`` is the saved domain's live XML, kept as its description."""
        try:
            conn.restoreFlags(str(path), None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise InfraError(f"could not restore {name} from {path}: {exc}") from exc
        return cls(conn, dom, name, xml)

    def save(self, path: Path) -> None:
        """virDomainSave: the guest's state to ``path``; the domain is gone afterwards."""
        try:
            self.dom.save(str(path))
        except libvirt.libvirtError as exc:
            raise InfraError(f"could not save {self.name} after boot: {exc}") from exc

    def resume(self) -> None:
        try:
            self.dom.resume()
        except libvirt.libvirtError as exc:
            raise GuestDied(f"domain {self.name} could not be resumed: {exc}") from exc

    def state(self) -> DomainState:
        try:
            state, reason = self.dom.state()
        except libvirt.libvirtError:
            return DomainState("shutoff", "gone")
        name = _STATE_NAMES.get(state, str(state))
        why = ""
        if state == libvirt.VIR_DOMAIN_PAUSED:
            why = _PAUSE_REASONS.get(reason, str(reason))
        elif state == libvirt.VIR_DOMAIN_SHUTOFF:
            why = _SHUTOFF_REASONS.get(reason, str(reason))
        if state == libvirt.VIR_DOMAIN_CRASHED:
            why = "panicked"
        return DomainState(name, why)

    def live_xml(self) -> str:
        try:
            return str(self.dom.XMLDesc(0))
        except libvirt.libvirtError:
            return self.xml

    def pause(self) -> None:
        try:
            if self.dom.isActive() and self.state().state == "running":
                self.dom.suspend()
        except libvirt.libvirtError as exc:
            raise GuestDied(f"domain {self.name} could not be paused: {exc}") from exc

    def inject_nmi(self) -> None:
        """virDomainInjectNMI: QEMU raises an NMI on every vCPU, even one spinning with
        interrupts off; a guest booted with unknown_nmi_panic then panics with its stacks."""
        try:
            self.dom.injectNMI(0)
        except libvirt.libvirtError as exc:
            raise GuestDied(f"could not inject an NMI into domain {self.name}: {exc}") from exc

    def yield_cpu(self) -> bool:
        """Give this guest's cgroup the smallest CPU share libvirt sets (2 of 1024): a
        crashed guest being dumped after its verdict then takes only the CPU the next
        attempt's booting guest leaves (on 2 cores a dump at the default share slowed that
        boot by 0.3-0.4 s). False when libvirt cannot (no CPU controller, test driver)."""
        try:
            self.dom.setSchedulerParameters({"cpu_shares": MIN_CPU_SHARES})
        except libvirt.libvirtError:
            return False
        return True

    def destroy(self) -> None:
        """Idempotent: destroying a domain already gone is not an error."""
        with contextlib.suppress(libvirt.libvirtError):
            self.dom.destroy()

    def wait_gone(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state().gone:
                return True
            time.sleep(0.1)
        return False


def run_tag_of(dom: Any) -> RunTag | None:
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, 0)
    except libvirt.libvirtError:
        return None
    return RunTag.from_xml(str(text))


__all__ = ["PREFIX", "Domain", "DomainState", "run_tag_of", "unique_name"]
