"""A test case's reproduction parameters, validated once.

The pytest marker, ``reprolab repro`` and the replay bundle all produce a :class:`CaseSpec`;
nothing below this layer ever sees the raw marker dictionary, so a typo in a test case is
reported once, with the test's name, before any guest boots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from reprolab.errors import UserError
from reprolab.guest.spec import GuestOptions
from reprolab.kernel.spec import parse_kernel_spec
from reprolab.problems import Problems
from reprolab.run.verdict import Expectation
from reprolab.virt import DEFAULT_FORMAT, DUMP_FORMATS

#: "explore" is a case without ``expect``: boot, run the body, record what was seen; no
#: attempt counts as a hit and no kernel outcome fails it (infrastructure errors still do).
Mode = Literal["regression", "reproduce", "explore"]
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
    #: Attempt counts mean what they say: every attempt runs unless "first-hit" is asked.
    until: Until = "all"
    boot_timeout: float = 180.0
    #: No console output for this long after boot counts as a silent hang (None: never).
    silence_timeout: float | None = None
    #: Memory-only dump format (compressed by default, see reprolab.virt.dump); None: no dump.
    dump: str | None = DEFAULT_FORMAT
    #: Seconds a hang may last before the guest's own detectors must have reported it.
    hang_budget: int | None = None

    @classmethod
    def from_marker(cls, name: str, kwargs: Mapping[str, Any], *,
                    base_dir: Path | None = None) -> CaseSpec:
        """Validate every marker key and build the spec; all problems are reported at once
        (:class:`MarkerError`, one line each). ``base_dir`` is the test file's directory,
        against which the kernel spec's relative paths are read."""
        where = f"test case {name}"
        p = Problems(where)
        for key in sorted(set(kwargs) - MARKER_KEYS, key=str):
            p.add(str(key), kwargs[key], f"unknown reprolab marker argument {key!r} "
                  f"(known: {', '.join(sorted(MARKER_KEYS))})")
        explore = kwargs.get("expect") is None
        expect = Expectation()
        if not explore:
            expect = Expectation.from_mapping(kwargs["expect"], where=where, problems=p)
        elif kwargs.get("mode", "explore") != "explore":
            p.lines.append(f"{where}: mode={kwargs['mode']!r} needs expect={{...}} (what "
                           "counts as reproduced); without expect the case is an "
                           "exploration run")
        cmdline = kwargs.get("cmdline") or {}
        if not isinstance(cmdline, Mapping):
            p.add("cmdline", cmdline, "cmdline must be a mapping of parameter to value")
            cmdline = {}
        mode = kwargs.get("mode", "explore" if explore else "regression")
        if mode not in ("regression", "reproduce", "explore"):
            p.add("mode", mode, "mode must be 'regression' or 'reproduce'")
        elif mode == "explore" and not explore:
            p.add("mode", mode, "mode='explore' is for cases without expect")
        until = kwargs.get("until", "all")
        if until not in ("first-hit", "all"):
            p.add("until", until, "until must be 'first-hit' or 'all'")
        attempts = kwargs.get("attempts", 1)
        if not _is_int(attempts) or attempts < 1:
            p.add("attempts", attempts, "attempts must be a positive integer")
        dump = kwargs.get("dump", DEFAULT_FORMAT)
        if dump is not None and dump not in DUMP_FORMATS:
            p.add("dump", dump, "dump must be 'kdump-zlib', 'elf' or None")
        kernel = kwargs.get("kernel", "stock")
        if not isinstance(kernel, str | Mapping):
            p.add("kernel", kernel, "kernel must be a spec string or a mapping")
            kernel = "stock"
        else:
            try:
                parse_kernel_spec(kernel, base_dir=base_dir)
            except UserError as exc:
                p.user_error("kernel", kernel, exc)
        boot_timeout = _seconds(p, kwargs, "boot_timeout", 180.0, optional=False)
        silence_timeout = _seconds(p, kwargs, "silence_timeout", None, optional=True)
        hang_budget = kwargs.get("hang_budget")
        if hang_budget is not None and (not _is_int(hang_budget) or hang_budget < 1):
            p.add("hang_budget", hang_budget, "hang_budget must be a positive integer "
                  "(seconds) or None")
        guest = GuestOptions.from_mapping(kwargs.get("guest"), where=where, problems=p)
        p.raise_if_any()
        return cls(
            name=name,
            expect=expect,
            kernel=kernel,
            guest=guest,
            cmdline=tuple(cmdline.items()),
            mode=mode,
            attempts=attempts,
            until=until,
            boot_timeout=boot_timeout if boot_timeout is not None else 180.0,
            silence_timeout=silence_timeout,
            dump=dump,
            hang_budget=hang_budget,
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

    def with_mode(self, mode: str | None) -> CaseSpec:
        """``--mode`` for cases that have an expectation; an exploration stays one."""
        if mode is None or self.mode == "explore":
            return self
        if mode not in ("regression", "reproduce"):
            raise UserError(f"--mode must be 'regression' or 'reproduce', got {mode!r}")
        return replace(self, mode=mode)  # type: ignore[arg-type]

    def with_attempt_rule(self, attempts: int | None, until: str | None) -> CaseSpec:
        """The command line's attempt count and stop rule applied to the case.

        ``--attempts N`` alone means N attempts, whatever the marker's ``until``: a count
        given on the command line is never cut short unless ``--until first-hit`` says so.
        """
        if until is not None and until not in ("first-hit", "all"):
            raise UserError(f"--until must be 'first-hit' or 'all', got {until!r}")
        if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
            raise UserError(f"--attempts must be a positive integer, got {attempts!r}")
        if attempts is not None and until is None:
            until = "all"
        return self.with_overrides(attempts=attempts, until=until)

    def stops_after(self, hit: bool) -> bool:
        """Whether an attempt that did (not) hit ends the case's attempts early."""
        return hit and self.until == "first-hit"

    def stop_rule(self) -> str:
        """The attempt rule in words, printed before and after a run so 1/1 is not a
        surprise when 3 attempts were asked."""
        n = self.attempts
        if self.until == "first-hit" and n > 1:
            return f"up to {n} attempts, stopping at the first hit (until=first-hit)"
        return f"{n} attempt{'s' if n != 1 else ''}, all run (until=all)" if n > 1 else \
            "1 attempt"

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(p: Problems, kwargs: Mapping[str, Any], key: str, default: float | None, *,
             optional: bool) -> float | None:
    value = kwargs.get(key, default)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        p.add(key, value, f"{key} must be a positive number of seconds"
              + (" or None" if optional else ""))
        return default
    return float(value)
