"""Stacks an expectation is matched against: the console's, and those the vmcore holds.

A silent hang prints nothing, yet the dump holds every CPU's registers and every task's
stack. The dossier (:mod:`reprolab.triage.vmcore`) unwinds them with drgn; this module turns
its per-CPU and D-state stacks into named :class:`Stack` values ("cpu 1 in vmcore", "task 42
in vmcore") so ``in_stack``/``frame`` can be found there and the result can say where.
Without debug info the dossier's stacks are guesses scanned from stack memory: they are not
used, and the caller notes that only the console was matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONSOLE = "console"
VMCORE_LOG = "kernel log in vmcore"

#: Frames that say how the stack was taken (the NMI, the panic it raised) or which lock
#: primitive spins, never which code is at fault: the guilty frame is the first one below.
_PLUMBING = re.compile(
    r"^(?:asm_exc_nmi|exc_nmi|default_do_nmi|unknown_nmi_error|nmi_\w*|\w*_handle_nmi\w*|panic|"
    r"end_repeat_nmi|repeat_nmi|first_nmi|nested_nmi\w*|"
    r"vpanic|__panic\w*|dump_stack\w*|show_regs|crash_\w*|__crash_kexec|native_safe_halt|"
    r"native_queued_spin_lock_slowpath|__pv_queued_spin_lock_slowpath|queued_\w*lock\w*|"
    r"do_raw_\w*lock\w*|_raw_\w*lock\w*|__raw_\w*lock\w*|"
    r"arch_cpu_idle\w*|default_idle\w*|cpu_idle_poll|do_idle|cpu_startup_entry)$"
)
_NAME = re.compile(r"^([A-Za-z_.$][\w.$]*)")


@dataclass(frozen=True)
class Stack:
    """One stack and where it was read."""

    where: str
    frames: tuple[str, ...]

    @property
    def guilty(self) -> str | None:
        """The first frame that is not NMI, panic or lock plumbing."""
        return guilty_frame(self.frames)


def guilty_frame(frames: Sequence[str]) -> str | None:
    return next((f for f in frames if not _PLUMBING.match(f)), None)


def frame_name(entry: str) -> str | None:
    """The function of a dossier frame: "f+0x10/0x40 file.c:12" -> "f".

    Inline frames ("f [inline] ...") count as none: the symbol check rejects names that only
    exist inlined, so a match must not hinge on whether the dump's debug info showed them.
    """
    m = _NAME.match(entry.strip())
    if m is None or entry.startswith("0x") or " [inline]" in entry:
        return None
    return m.group(1)


def _names(entries: Iterable[Any]) -> tuple[str, ...]:
    return tuple(n for n in (frame_name(str(e)) for e in entries) if n)


def vmcore_stacks(dossier: Mapping[str, Any]) -> tuple[Stack, ...]:
    """Every CPU's and every D-state task's stack, when drgn unwound them with debug info."""
    if not dossier.get("debug_info"):
        return ()
    out = []
    for cpu in dossier.get("cpus") or ():
        frames = _names(cpu.get("stack") or ())
        if frames and cpu.get("stack_reliable"):
            out.append(Stack(f"cpu {cpu.get('cpu')} in vmcore", frames))
    for task in dossier.get("d_state_tasks") or ():
        frames = _names(task.get("stack") or ())
        if frames:
            out.append(Stack(f"task {task.get('pid')} in vmcore", frames))
    return tuple(out)


def cpus_with_stacks(dossier: Mapping[str, Any]) -> int:
    """How many CPUs of the dump have an unwound stack (the bench's "every CPU" check)."""
    return sum(1 for s in vmcore_stacks(dossier) if s.where.startswith("cpu "))
