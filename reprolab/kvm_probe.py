"""Does a guest really boot under KVM here? Asked once per host boot, answered by trying.

Hosts where /dev/kvm exists but is not usable hardware virtualisation (a nested host whose
outer hypervisor hides VMX, an emulated CPU) hang a KVM guest before its first console
byte. Only a real boot tells, so the probe boots the stock kernel with the minimal image
under KVM and waits for the kernel's banner; the answer is cached by the host's boot id.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from reprolab.console import Console
from reprolab.errors import ReprolabError
from reprolab.guest.spec import GuestSpec, merge_cmdline
from reprolab.paths import state_root
from reprolab.virt.connection import open_connection
from reprolab.virt.domain import Domain

PROBE_TIMEOUT = 45.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(uri: str = "qemu:///system") -> tuple[bool, str]:
    cache = state_root() / "kvm-probe.json"
    boot_id = _boot_id()
    try:
        known = json.loads(cache.read_text())
        if known.get("boot_id") == boot_id and known.get("uri") == uri:
            return bool(known["booted"]), str(known["detail"])
    except (OSError, ValueError, KeyError):
        pass
    booted, detail = _probe(uri)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"boot_id": boot_id, "uri": uri, "booted": booted,
                                 "detail": detail}))
    return booted, detail


def _probe(uri: str) -> tuple[bool, str]:
    from reprolab.image.build import build_image
    from reprolab.kernel.artifacts import stock_kernel

    try:
        kernel = stock_kernel()
        image = build_image("minimal", kernel)
        conn = open_connection(uri)
    except ReprolabError as exc:
        return False, f"probe could not start: {exc}"
    spec = GuestSpec(kernel=kernel.image, initrd=image.initrd, accel="kvm", cpu_model="host",
                     vcpus=1, memory_mib=256, panic_device="none",
                     cmdline=merge_cmdline({"console": "ttyS0", "panic": -1}))
    domain = None
    with tempfile.TemporaryDirectory(prefix="rl-kvm-probe-") as tmp:
        try:
            domain = Domain.start(conn, spec, label="kvm-probe", test="kvm-probe")
            console = Console(uri, domain.name, Path(tmp) / "console.log")
            console.attach()
            domain.resume()
            console.wait_for(r"Linux version", PROBE_TIMEOUT)
            console.close()
            return True, "a KVM guest printed its kernel banner"
        except ReprolabError as exc:
            return False, str(exc)
        finally:
            if domain is not None:
                domain.destroy()
            conn.close()
