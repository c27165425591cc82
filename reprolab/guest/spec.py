"""What a guest is, as data.

A :class:`GuestSpec` is everything needed to boot one guest and nothing about how: it is
rendered to domain XML by :mod:`reprolab.guest.domain_xml` and saved in every replay bundle,
so it stays a plain frozen value that compares and hashes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reprolab.errors import UserError
from reprolab.problems import Problems

Accel = Literal["kvm", "tcg"]
PanicDevice = Literal["isa", "none"]
WatchdogAction = Literal["pause", "reset", "poweroff", "shutdown", "dump", "none"]
FeaturePolicy = Literal["require", "disable"]
#: One CPUID feature the guest CPU must show ("require") or must not ("disable").
CpuFeature = tuple[str, FeaturePolicy]

_MEM = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|[KMGT]|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1 << 20, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
#: QEMU/libvirt CPU feature names: "movbe", "sse4.2", "avx512-vp2intersect", "pdpe1gb".
_FEATURE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
_POLICY_SIGN: dict[str, FeaturePolicy] = {"+": "require", "-": "disable"}


def parse_memory(value: str | int) -> int:
    """Memory in MiB from ``512``, ``"512M"``, ``"1G"``, ``"2GiB"`` (a bare number is MiB)."""
    if isinstance(value, int):
        if value <= 0:
            raise UserError(f"guest memory must be positive, got {value}")
        return value
    m = _MEM.match(str(value))
    if not m:
        raise UserError(f"guest memory {value!r} is not a size like 512M or 2G")
    unit = (m.group(2) or "").upper()[:1]
    mib = int(m.group(1)) * _UNITS[unit] // (1 << 20)
    if mib < 64:
        raise UserError(f"guest memory {value!r} is below the 64 MiB a kernel needs")
    return mib


def parse_cpu_features(value: Any, *, where: str) -> tuple[CpuFeature, ...]:
    """``["+movbe", "-pdpe1gb"]`` (or one such string) as (name, policy) pairs, in order.

    A feature toggled on the guest CPU is how one kernel gives a positive and a negative
    control (a bug taken only on CPUs that show the feature), so a typo must not silently
    leave the CPU as it was: each item needs its sign and a plausible name, once.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise UserError(f"{where}: guest cpu_features must be a list like ['+movbe', '-x2apic'], "
                        f"got {value!r}")
    features: dict[str, FeaturePolicy] = {}
    for item in items:
        text = item.strip() if isinstance(item, str) else ""
        name = text[1:].strip()
        if text[:1] not in _POLICY_SIGN or not _FEATURE.match(name):
            raise UserError(f"{where}: guest cpu_features item {item!r} must be '+name' "
                            "(require) or '-name' (disable), name as QEMU spells it")
        if name in features:
            raise UserError(f"{where}: guest cpu_features names {name!r} twice")
        features[name] = _POLICY_SIGN[text[0]]
    return tuple(features.items())


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


def merge_cmdline(
    *parts: Mapping[str, Any] | tuple[tuple[str, str | None], ...],
) -> tuple[tuple[str, str | None], ...]:
    """Merge command-line layers; a later layer overrides an earlier key, keeping its slot.

    Later layers are the test case's, so a case can override reprolab's defaults (say
    ``panic=0``) without knowing them. ``True`` or ``None`` values render as bare flags.
    """
    merged: dict[str, str | None] = {}
    for part in parts:
        items = part.items() if isinstance(part, Mapping) else part
        for key, value in items:
            if value is False:
                merged.pop(str(key), None)
                continue
            merged[str(key)] = None if value is None or value is True else str(value)
    return tuple(merged.items())


@dataclass(frozen=True)
class GuestOptions:
    """The guest part of a test case, before kernel and image are known."""

    vcpus: int = 2
    memory_mib: int = 512
    image: str = "minimal"
    nested: bool = False
    cpu_model: str | None = None
    cpu_features: tuple[CpuFeature, ...] = ()
    watchdog: Watchdog | None = None
    panic_device: PanicDevice = "isa"
    extra_devices: tuple[str, ...] = field(default=())

    @classmethod
    def from_mapping(cls, data: Any, *, where: str,
                     problems: Problems | None = None) -> GuestOptions:
        """Validate a marker's ``guest={...}``; unknown keys are a typo the user must hear of."""
        from reprolab.image.recipe import images_dir, recipe_path

        p = problems if problems is not None else Problems(where)
        known = {"vcpus", "memory", "image", "nested", "cpu", "cpu_features", "watchdog", "panic",
                 "devices"}
        if data is not None and not isinstance(data, Mapping):
            p.add("guest", data, f"guest must be a mapping (keys: {', '.join(sorted(known))})")
            data = {}
        data = dict(data or {})
        for key in sorted(set(data) - known, key=str):
            p.add(f"guest.{key}", data[key], f"unknown guest key {key!r} "
                  f"(known: {', '.join(sorted(known))})")
        watchdog = _watchdog(data.get("watchdog"), p)
        vcpus = data.get("vcpus", 2)
        if not isinstance(vcpus, int) or isinstance(vcpus, bool) or not 1 <= vcpus <= 64:
            p.add("guest.vcpus", vcpus, "guest vcpus must be an integer from 1 to 64")
            vcpus = 2
        memory = 512
        try:
            memory = parse_memory(data.get("memory", 512))
        except UserError as exc:
            p.user_error("guest.memory", data.get("memory"), exc)
        image = data.get("image", "minimal")
        if not isinstance(image, str) or not image:
            p.add("guest.image", image, "guest image must be a recipe name (images/*.yaml)")
            image = "minimal"
        elif not recipe_path(image).is_file():
            names = sorted(r.stem for r in images_dir().glob("*.yaml"))
            p.add("guest.image", image, f"no such image recipe (known: {', '.join(names)})")
        nested = data.get("nested", False)
        if not isinstance(nested, bool):
            p.add("guest.nested", nested, "guest nested must be true or false")
            nested = False
        cpu = data.get("cpu")
        if cpu is not None and (not isinstance(cpu, str) or not cpu):
            p.add("guest.cpu", cpu, "guest cpu must be a QEMU CPU model name")
            cpu = None
        panic = data.get("panic", "isa")
        if panic not in ("isa", "none"):
            p.add("guest.panic", panic, "guest panic must be 'isa' or 'none'")
            panic = "isa"
        devices = data.get("devices", ())
        if isinstance(devices, str):
            devices = (devices,)
        if not isinstance(devices, list | tuple) or not all(isinstance(d, str) for d in devices):
            p.add("guest.devices", devices, "guest devices must be device XML strings")
            devices = ()
        cpu_features: tuple[CpuFeature, ...] = ()
        try:
            cpu_features = parse_cpu_features(data.get("cpu_features", ()), where=where)
        except UserError as exc:
            p.add("guest.cpu_features", data.get("cpu_features"),
                  str(exc).removeprefix(f"{where}: "))
        if problems is None:
            p.raise_if_any()
        return cls(
            vcpus=vcpus,
            memory_mib=memory,
            image=image,
            nested=nested,
            cpu_model=cpu,
            cpu_features=cpu_features,
            watchdog=watchdog,
            panic_device=panic,
            extra_devices=tuple(devices),
        )


WATCHDOG_MODELS = ("i6300esb", "ib700")
WATCHDOG_ACTIONS = ("pause", "reset", "poweroff", "shutdown", "dump", "none")


def _watchdog(wd: Any, p: Problems) -> Watchdog | None:
    if wd is None or wd is False:
        return None
    if wd is True:
        return Watchdog()
    if not isinstance(wd, Mapping):
        p.add("guest.watchdog", wd, "guest watchdog must be true or a mapping with keys "
              "model, action")
        return None
    ok = True
    for key in sorted(set(wd) - {"model", "action"}, key=str):
        p.add(f"guest.watchdog.{key}", wd[key], f"unknown watchdog key {key!r} "
              "(known: action, model)")
        ok = False
    model = wd.get("model", "i6300esb")
    if model not in WATCHDOG_MODELS:
        p.add("guest.watchdog.model", model, f"one of {', '.join(WATCHDOG_MODELS)}")
        ok = False
    action = wd.get("action", "pause")
    if action not in WATCHDOG_ACTIONS:
        p.add("guest.watchdog.action", action, f"one of {', '.join(WATCHDOG_ACTIONS)}")
        ok = False
    return Watchdog(model=model, action=action) if ok else None
