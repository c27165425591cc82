"""What an attempt saw, from the console and from the vmcore, reduced to :class:`Observed`.

The console is the first witness, but not the only one: when it holds no report (the guest
died silently, or only the harness's NMI made it speak) the kernel log inside the vmcore
may, and the dump's per-CPU and D-state stacks are evidence an ``in_stack``/``frame``
expectation can be met in. The result says where it was met.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab.detect.events import HANG_KINDS
from reprolab.run.verdict import Observed
from reprolab.triage.stacks import CONSOLE, VMCORE_LOG, guilty_frame, vmcore_stacks

if TYPE_CHECKING:
    from reprolab.detect.report import CrashReport
    from reprolab.guest.handle import Guest

#: Frames of the panic the harness's own NMI raises: such a report shows stacks, not a cause.
_NMI_PANIC_FRAMES = frozenset({"unknown_nmi_error", "nmi_panic"})


@dataclass(frozen=True)
class Observation:
    seen: Observed
    signature: str | None


def _load(dossier: Path | None) -> dict[str, Any]:
    if dossier is None:
        return {}
    try:
        data = json.loads(dossier.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def observe(guest: Guest, report: CrashReport | None, dossier: Path | None,
            notes: list[str]) -> Observation:
    fatal = guest.fatal_event
    data = _load(dossier)
    hung = guest.hung(report)
    title = report.title if report else (fatal.line if fatal else None)
    alt = tuple(report.alt_titles) if report else ()
    kind = report.kind if report else (fatal.kind if fatal else None)
    frame = report.frame if report else None
    frames = tuple(report.frames) if report else ()
    signature = report.signature.key if report else (fatal.kind if fatal else None)
    source = CONSOLE
    logged = data.get("dmesg_crash")
    # The log's first report names the death even when the parser did not call it fatal by
    # itself ("BUG: stack guard page was hit", then a panic): the guest did die. A hang is
    # no such death: a harmless earlier warning must not become its title.
    died = fatal is not None and fatal.kind not in HANG_KINDS
    if (report is None or not report.fatal) and isinstance(logged, dict) and logged.get(
            "crashed") and (logged.get("fatal", True) or died):
        from_nmi = guest.nmi_position is not None and bool(
            _NMI_PANIC_FRAMES & set(logged.get("frames") or ()))
        if not from_nmi:
            title, kind = logged.get("title"), logged.get("kind")
            alt = tuple(logged.get("alt_titles") or ())
            frame, frames = logged.get("frame"), tuple(logged.get("frames") or ())
            signature = logged.get("signature") or signature
            source, hung = VMCORE_LOG, False
            notes.append(f"title from the kernel log in the vmcore (the console had no "
                         f"report): {title}")
        elif not frames:
            # The console had nothing; the log in the dump has the panicking CPU's stack.
            frames, source = tuple(logged.get("frames") or ()), VMCORE_LOG
    if hung and fatal is not None:
        # The outcome is the hang; a report the NMI forced out contributes its stack only.
        title, kind, alt = fatal.line, fatal.kind, ()
        frame, signature = guilty_frame(frames), fatal.kind
    stacks = vmcore_stacks(data)
    if data and not stacks:
        notes.append("vmcore has no usable debug info for this kernel: in_stack/frame were "
                     "matched against the console only")
    seen = Observed(
        crashed=fatal is not None or (report is not None and report.fatal)
        or source == VMCORE_LOG,
        title=title, alt_titles=alt, kind=kind, frame=frame, frames=frames,
        events=tuple(e.kind for e in guest.events),
        hung=hung, report_source=source, stacks=stacks,
    )
    return Observation(seen, signature)


def annotate_dossier(dossier: Path | None, matched_in: str | None, expect: str) -> None:
    """Say in the dossier where the expected frame was found (or that it was not)."""
    data = _load(dossier)
    if dossier is None or not data:
        return
    from reprolab.triage.dossier import render_markdown

    data["expectation"] = {"expect": expect, "matched_in": matched_in}
    dossier.write_text(json.dumps(data, indent=2) + "\n")
    md = render_markdown(data)
    where = matched_in or "nowhere (console and vmcore stacks checked)"
    md += f"\n## Expectation\n\n{expect}: found in {where}\n"
    (dossier.parent / "report.md").write_text(md)
