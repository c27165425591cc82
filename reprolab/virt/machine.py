"""One guest machine as data: what libvirt is asked to boot.

A :class:`GuestSpec` is everything needed to boot one guest and nothing about how: it is
rendered to domain XML by :mod:`reprolab.virt.domain_xml` and saved in every replay bundle,
so it stays a plain frozen value that compares and hashes. A test case's guest options
(:mod:`reprolab.guest.spec`) are turned into one by the run's boot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reprolab.errors import UserError

Accel = Literal["kvm", "tcg"]
PanicDevice = Literal["isa", "none"]
WatchdogAction = Literal["pause", "reset", "poweroff", "shutdown", "dump", "none"]
FeaturePolicy = Literal["require", "disable"]
#: One CPUID feature the guest CPU must show ("require") or must not ("disable").
CpuFeature = tuple[str, FeaturePolicy]


@dataclass(frozen=True)
class Watchdog:
    """A virtual hardware watchdog; ``pause`` lets reprolab dump the guest when it fires."""

    model: Literal["i6300esb", "ib700"] = "i6300esb"
    action: WatchdogAction = "pause"


@dataclass(frozen=True)
class GuestSpec:
    """One guest: kernel, initrd or disk, command line, CPUs, memory and devices."""

    kernel: Path
    initrd: Path | None = None
    #: Kernel command line as ordered (key, value) pairs; value None means a bare flag.
    cmdline: tuple[tuple[str, str | None], ...] = ()
    vcpus: int = 2
    memory_mib: int = 512
    #: QEMU CPU model; ``qemu64`` under TCG, ``host-passthrough`` is spelled ``host``.
    cpu_model: str = "qemu64"
    #: Expose nested virtualisation (SVM under TCG, the host's VMX/SVM under KVM).
    nested: bool = False
    #: CPUID features added to or removed from the CPU model, in order.
    cpu_features: tuple[CpuFeature, ...] = ()
    accel: Accel = "tcg"
    panic_device: PanicDevice = "isa"
    watchdog: Watchdog | None = None
    #: Disk image for the ``disk`` image kind (a per-run overlay), on virtio-blk.
    disk: Path | None = None
    #: Forward this host port on 127.0.0.1 to the guest's port 22 (user-mode networking).
    ssh_port: int | None = None
    #: QEMU fw_cfg items (name -> host file), e.g. the run's authorized_keys.
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    #: Extra device XML snippets appended verbatim under <devices>.
    extra_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.vcpus < 1 or self.vcpus > 64:
            raise UserError(f"guest vcpus must be 1..64, got {self.vcpus}")
        if self.memory_mib < 64:
            raise UserError(f"guest memory must be at least 64 MiB, got {self.memory_mib}")
        if (self.nested and self.cpu_model != "host"
                and (nested_flag(self.cpu_model), "disable") in self.cpu_features):
            raise UserError(f"guest cpu_features disables {nested_flag(self.cpu_model)}, "
                            "which nested virtualisation needs")

    def cmdline_text(self) -> str:
        return " ".join(k if v is None else f"{k}={v}" for k, v in self.cmdline)


def nested_flag(cpu_model: str) -> str:
    """The CPUID flag nested virtualisation needs on ``cpu_model`` (a named, non-host one)."""
    return "vmx" if "intel" in cpu_model.lower() else "svm"
