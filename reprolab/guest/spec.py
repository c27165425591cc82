"""What a test case asks of its guest: options from the marker, the command line's layers.

The machine itself (:class:`GuestSpec`: everything needed to boot one guest and nothing
about how) is libvirt's input, so it lives in :mod:`reprolab.virt.machine` with the domain
XML it is rendered to; ``guest/`` builds on ``virt/``, never the other way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reprolab.errors import UserError
from reprolab.problems import Problems
from reprolab.virt.machine import (
    Accel,
    CpuFeature,
    FeaturePolicy,
    GuestSpec,
    PanicDevice,
    Watchdog,
    WatchdogAction,
    nested_flag,
)

#: The machine types live with the domain XML in :mod:`reprolab.virt.machine`; the names
#: stay importable from here, where a test case's guest options are read.
__all__ = ["Accel", "CpuFeature", "FeaturePolicy", "GuestOptions", "GuestSpec", "PanicDevice",
           "Watchdog", "WatchdogAction", "merge_cmdline", "nested_flag", "parse_cpu_features",
           "parse_memory"]

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
