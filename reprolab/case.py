"""A test case's reproduction parameters, validated once.

The pytest marker, ``reprolab repro`` and the replay bundle all produce a :class:`CaseSpec`;
nothing below this layer ever sees the raw marker dictionary, so a typo in a test case is
reported once, with the test's name, before any guest boots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from reprolab.errors import UserError
from reprolab.guest.spec import GuestOptions
from reprolab.verdict import Expectation
from reprolab.virt.dump import DEFAULT_FORMAT, DUMP_FORMATS

Mode = Literal["regression", "reproduce"]
Until = Literal["first-hit", "all"]

MARKER_KEYS = {
    "kernel", "guest", "cmdline", "expect", "mode", "attempts", "until",
    "boot_timeout", "silence_timeout", "dump", "hang_budget",
}


@dataclass(frozen=True)
class CaseSpec:
    name: str
    expect: Expectation
    kernel: str | Mapping[str, Any] = "stock"
    guest: GuestOptions = field(default_factory=GuestOptions)
    cmdline: tuple[tuple[str, Any], ...] = ()
    mode: Mode = "regression"
    attempts: int = 1
    until: Until = "first-hit"
    boot_timeout: float = 180.0
    #: No console output for this long after boot counts as a silent hang (None: never).
    silence_timeout: float | None = None
    #: Memory-only dump format (compressed by default, see reprolab.virt.dump); None: no dump.
    dump: str | None = DEFAULT_FORMAT
    #: Seconds a hang may last before the guest's own detectors must have reported it.
    hang_budget: int | None = None

    @classmethod
    def from_marker(cls, name: str, kwargs: Mapping[str, Any]) -> CaseSpec:
        where = f"test case {name}"
        unknown = sorted(set(kwargs) - MARKER_KEYS)
        if unknown:
            raise UserError(
                f"{where}: unknown reprolab marker argument {unknown[0]!r} "
                f"(known: {', '.join(sorted(MARKER_KEYS))})"
            )
        if "expect" not in kwargs:
            raise UserError(f"{where}: the reprolab marker needs expect={{...}} (what counts "
                            "as reproduced)")
        cmdline = kwargs.get("cmdline") or {}
        if not isinstance(cmdline, Mapping):
            raise UserError(f"{where}: cmdline must be a mapping of parameter to value")
        mode = kwargs.get("mode", "regression")
        if mode not in ("regression", "reproduce"):
            raise UserError(f"{where}: mode must be 'regression' or 'reproduce', got {mode!r}")
        until = kwargs.get("until", "first-hit")
        if until not in ("first-hit", "all"):
            raise UserError(f"{where}: until must be 'first-hit' or 'all', got {until!r}")
        attempts = kwargs.get("attempts", 1)
        if not isinstance(attempts, int) or attempts < 1:
            raise UserError(f"{where}: attempts must be a positive integer, got {attempts!r}")
        dump = kwargs.get("dump", DEFAULT_FORMAT)
        if dump is not None and dump not in DUMP_FORMATS:
            raise UserError(f"{where}: dump must be 'kdump-zlib', 'elf' or None, got {dump!r}")
        kernel = kwargs.get("kernel", "stock")
        if not isinstance(kernel, str | Mapping):
            raise UserError(f"{where}: kernel must be a spec string or a mapping")
        return cls(
            name=name,
            expect=Expectation.from_mapping(kwargs["expect"], where=where),
            kernel=kernel,
            guest=GuestOptions.from_mapping(kwargs.get("guest"), where=where),
            cmdline=tuple(cmdline.items()),
            mode=mode,
            attempts=attempts,
            until=until,
            boot_timeout=float(kwargs.get("boot_timeout", 180.0)),
            silence_timeout=kwargs.get("silence_timeout"),
            dump=dump,
            hang_budget=kwargs.get("hang_budget"),
        )

    def with_dump(self, fmt: str | None) -> CaseSpec:
        """``--reprolab-dump`` picks the format; a case that takes no dump keeps taking none."""
        if fmt is None or self.dump is None:
            return self
        if fmt not in DUMP_FORMATS:
            raise UserError(f"dump format must be one of {', '.join(DUMP_FORMATS)}, got {fmt!r}")
        return replace(self, dump=fmt)

    def with_overrides(self, **changes: Any) -> CaseSpec:
        """Command-line options override the case (``--reprolab-attempts`` and friends)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
