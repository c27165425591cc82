"""Stopping and restarting the host's libvirt daemons, and finding what a fault leaked.

No systemd here: virtlogd runs daemonised (``-d``), libvirtd under ``tini -s``
(scripts/start-daemons.sh), both with pid files in /run.
libvirtd 9.0 can hang on SIGTERM while it destroys AUTODESTROY guests, so a stop that
does not finish is finished with SIGKILL. Every start waits until the daemon answers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import libvirt

from reprolab.paths import runtime_root
from reprolab.virt.scratch import OWNER_FILE

URI = "qemu:///system"
START_DAEMONS = Path(__file__).resolve().parents[2] / "scripts" / "start-daemons.sh"
PIDFILES = {"libvirtd": Path("/run/libvirtd.pid"), "virtlogd": Path("/run/virtlogd.pid")}


def pid_of(daemon: str) -> int | None:
    try:
        pid = int(PIDFILES[daemon].read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    comm = Path(f"/proc/{pid}/comm").read_text().strip() if Path(f"/proc/{pid}").exists() else ""
    return pid if comm == daemon else None


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie of ours would never go; daemonised ones are reaped by init.
        time.sleep(0.1)
    return False


def stop(daemon: str, sig: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> None:
    pid = pid_of(daemon)
    if pid is None:
        return
    os.kill(pid, sig)
    if not _wait_dead(pid, grace) and sig != signal.SIGKILL:
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid, 10.0)


def _libvirt_answers() -> bool:
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def ensure_running() -> None:
    """virtlogd, then libvirtd, each started if it is not running, until libvirt answers."""
    # As bootstrap starts them (libvirtd under a subreaper, so destroys stay quick).
    subprocess.run([str(START_DAEMONS)], check=True)
    deadline = time.monotonic() + 60
    while not _libvirt_answers():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not come back within 60 s")
        time.sleep(0.2)


def qemu_pid(domain: str) -> int | None:
    path = Path(f"/run/libvirt/qemu/{domain}.pid")
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_qemu(domain: str) -> bool:
    pid = qemu_pid(domain)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def leaks(domains: list[str]) -> list[str]:
    """What a finished run must not leave: domains, QEMU processes, owned scratch."""
    found: list[str] = []
    try:
        conn = libvirt.open(URI)
        try:
            live = {d.name() for d in conn.listAllDomains()}
        finally:
            conn.close()
    except libvirt.libvirtError as exc:
        found.append(f"libvirt not answering: {exc}")
        live = set()
    found += [f"domain {d}" for d in domains if d in live]
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                         check=True).stdout
    for d in domains:
        if re.search(rf"guest={re.escape(d)}\b", out):
            found.append(f"qemu process of {d}")
    root = runtime_root()
    for path in root.iterdir():
        # (Loose *.serial.log files here are older reprolab versions' runs, still going.)
        owner = path / OWNER_FILE
        if owner.exists() and f'"pid": {os.getpid()},' not in owner.read_text():
            # A session directory of another process: leaked unless that process lives.
            pid = int(re.search(r'"pid": (\d+)', owner.read_text()).group(1))  # type: ignore[union-attr]
            if not Path(f"/proc/{pid}").exists():
                found.append(f"scratch of dead pid {pid}: {path}")
    return found
