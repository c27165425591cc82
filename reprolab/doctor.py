"""Can a reproduction run start on this host, and with what?

Each check answers one question a kernel engineer asks before trusting a verdict from
this machine: which libvirt and QEMU, which acceleration (and why not KVM), whether nested
virtualisation can be offered, where the stock kernel is, and whether a vmcore fits on disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reprolab.accel import AccelInfo, detect_accel
from reprolab.errors import ReprolabError
from reprolab.kernel.artifacts import stock_kernel
from reprolab.paths import cache_root
from reprolab.virt.connection import is_remote, open_connection

Status = Literal["ok", "warn", "fail"]

#: A vmcore is as large as the guest's memory; below this no dump of a default guest fits.
MIN_FREE_GIB = 4
#: The socket send buffer QEMU's console socket needs so a burst waits in it instead of
#: meeting EAGAIN, which QEMU 7.2 turns into a lost byte once virtlogd died (see
#: scripts/start-daemons.sh, which sets it).
CONSOLE_SNDBUF = 4 << 20
WMEM_DEFAULT = Path("/proc/sys/net/core/wmem_default")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<12} {self.detail}"


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def run_checks(uri: str, artifacts: Path, *, probe: Callable[[], tuple[bool, str]] | None = None
               ) -> list[Check]:
    checks: list[Check] = []
    conn: Any = None
    try:
        conn = open_connection(uri)
        checks.append(Check("libvirt", "ok", f"{_version(conn.getLibVersion())} at {uri}"))
    except ReprolabError as exc:
        checks.append(Check("libvirt", "fail", str(exc)))
    if conn is not None:
        try:
            checks.append(Check("qemu", "ok", f"{_version(conn.getVersion())} "
                                f"({conn.getType()} driver)"))
        except Exception as exc:
            checks.append(Check("qemu", "fail", f"cannot read the hypervisor version: {exc}"))
        finally:
            conn.close()

    if probe is None:
        from reprolab.kvm_probe import probe_kvm

        def probe() -> tuple[bool, str]:
            return probe_kvm(uri)

    accel: AccelInfo = detect_accel(probe=probe)
    checks.append(Check("accel", "ok", f"{accel.accel}: {accel.reason}"))
    checks.append(Check("nested", "ok" if accel.nested else "warn",
                        f"{accel.nested or 'unavailable'}: {accel.nested_reason}"))
    try:
        kernel = stock_kernel()
        checks.append(Check("kernel", "ok", f"stock {kernel.release}"))
        checks.append(debug_info_check(kernel.release))
    except ReprolabError as exc:
        checks.append(Check("kernel", "fail", str(exc)))
    if not is_remote(uri):
        checks.append(console_buffer_check())
    for label, path in (("disk", artifacts), ("cache", cache_root())):
        probe_path = path
        while not probe_path.exists():
            probe_path = probe_path.parent
        free = shutil.disk_usage(probe_path).free / (1 << 30)
        status: Status = "ok" if free >= MIN_FREE_GIB else "fail"
        what = "vmcores" if label == "disk" else "kernels and images"
        checks.append(Check(label, status, f"{free:.1f} GiB free for {what} under {path}"))
    return checks


def debug_info_check(release: str) -> Check:
    """Dossiers of stock-kernel dumps need Debian's -dbg vmlinux; say how to get it."""
    from reprolab.kernel.debuginfo import stock_debug_info

    dbg = stock_debug_info(release)
    if dbg.present:
        return Check("debuginfo", "ok", f"stock {release}: {dbg.path}")
    return Check("debuginfo", "warn", f"stock {release} has none, so stock-kernel dossiers "
                 f"have unsymbolised stacks; get it with: {dbg.advice}")


def console_buffer_check(path: Path = WMEM_DEFAULT) -> Check:
    """A local guest's console is a unix socket QEMU writes a byte at a time: too small a
    default send buffer, and bytes are lost after a virtlogd crash."""
    try:
        size = int(path.read_text())
    except (OSError, ValueError) as exc:
        return Check("console", "warn", f"cannot read {path}: {exc}")
    if size >= CONSOLE_SNDBUF:
        return Check("console", "ok", f"net.core.wmem_default {size}")
    return Check("console", "warn",
                 f"net.core.wmem_default {size}: a console burst then meets EAGAIN in QEMU, "
                 f"which drops those bytes once virtlogd has crashed; raise it with: "
                 f"sysctl -w net.core.wmem_default={CONSOLE_SNDBUF}")
