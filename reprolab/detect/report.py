"""Whole-log crash reports: find the first crash, cut its text, title it.

The cut follows syzkaller's findReport: the report starts at the first line carrying a known
header, keeps only lines from the same printk context (task or CPU caller id) so that other
CPUs' chatter does not leak in, drops the panic_on_warn tail once enough of the real report
is there, and stops being trusted at the next unrelated report. Five preceding lines from the
same context (fifty with task ids) are prepended because they often say what was going on.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Any

from reprolab.detect import kinds
from reprolab.detect.demangle import demangle
from reprolab.detect.extract import CORRUPTED_NO_FRAMES, extract_description, is_corrupted
from reprolab.detect.lines import console_lines
from reprolab.detect.oopses import (
    HARD_LOCKUP,
    INFO_MESSAGES_WITH_STACK,
    LINUX_OOPSES,
    REPORT_START_IGNORES,
)
from reprolab.detect.parser import ORDERLY_RESTART
from reprolab.detect.rules import FRAME_RES, RIP_FRAME, Oops
from reprolab.detect.signature import Signature
from reprolab.detect.titles import sanitize_title, title_frame, title_type

_CONSOLE_PREFIX = re.compile(
    r"^(?:\*\* [0-9]+ printk messages dropped \*\* )?(?:.* login: )?(?:\<[0-9]+\>)?"
    r"\[ *[0-9]+\.[0-9]+\](\[ *(?:C|T)[0-9]+\])? "
)
_TASK_CONTEXT = re.compile(r"\[ *T[0-9]+\]")
_CPU_CONTEXT = re.compile(r"\[ *C[0-9]+\]")
_QUESTIONABLE = re.compile(r"(\[\<[0-9a-f]+\>\])? \? ")
_PAST_END = re.compile(r"\+0x([0-9a-f]+)/0x\1\b")
_CONSOLE = "console"
_GCE_HANGUP = "serialport: VM disconnected."
_CPU_LINE = re.compile(r"\bCPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)")
_HUNG_TASK = re.compile(r"INFO: task (\S+?):(\d+) blocked")
_CPU_IN_TITLE_LINE = re.compile(r"CPU#(\d+)|on cpu (\d+)|on CPU (\d+)")
MAX_REPORT_FRAMES = 64
#: A report is cut this many console lines after its first line: real reports (even an
#: all-CPU backtrace of a big machine) are far shorter, and a flood after a crash must not
#: turn the report into a copy of the console.
MAX_REPORT_LINES = 5000


@dataclass(frozen=True)
class CrashReport:
    """One crash as read from the console: enough to group, bisect and show a person."""

    title: str
    alt_titles: tuple[str, ...]
    kind: str
    frame: str | None
    corrupted: bool
    report: str
    cpu: int | None = None
    task: str | None = None
    frames: tuple[str, ...] = ()
    type: str | None = None
    fatal: bool = True
    corrupted_reason: str = ""
    start: int = 0  # character offset of the report's first line in the (normalised) log
    end: int = 0
    #: Lockups and stalls: the function the CPU was stuck in (crash's exception RIP, the RIP
    #: line, or the top reliable frame), next to the syzkaller-style title, which names the
    #: caller of the dispatch entry point for stable grouping.
    stuck_in: str | None = None
    #: The first fatal report (the one that killed the guest). syzkaller titles a log after
    #: its first report, often a survivable WARNING; what brought the machine down is this.
    fatal_title: str | None = None
    fatal_kind: str | None = None

    @property
    def signature(self) -> Signature:
        """Kind + guilty frame; a "corrupted" frame is no frame (it names no code, and a clean
        report of the same bug must still match it)."""
        return Signature(self.kind, None if self.frame == "corrupted" else self.frame)

    def to_json(self) -> dict[str, Any]:
        """The fixed leading keys other tools rely on, then the details."""
        return {
            "crashed": True,
            "title": self.title,
            "alt_titles": list(self.alt_titles),
            "kind": self.kind,
            "frame": self.frame,
            "corrupted": self.corrupted,
            "report": self.report,
            "type": self.type,
            "cpu": self.cpu,
            "task": self.task,
            "frames": list(self.frames),
            "fatal": self.fatal,
            "corrupted_reason": self.corrupted_reason,
            "signature": self.signature.key,
            "stuck_in": self.stuck_in,
            "fatal_title": self.fatal_title,
            "fatal_kind": self.fatal_kind,
        }


def no_crash_json() -> dict[str, Any]:
    return {"crashed": False, "title": None, "alt_titles": [], "kind": None, "frame": None,
            "corrupted": False, "report": "", "stuck_in": None, "fatal_title": None,
            "fatal_kind": None}


def extract_context(line: str) -> str:
    m = _CONSOLE_PREFIX.match(line)
    if m is None:
        return ""
    return m.group(1) if m.group(1) is not None else _CONSOLE


def _strip_prefix(line: str, context: str, use_questionable: bool = False
                  ) -> tuple[str, bool]:
    """Drop the timestamp/caller prefix; "? frame" lines are unreliable, flag them (or, with
    ``use_questionable``, keep them as plain frames)."""
    if context:
        line = line[line.find("] ") + 2:]
    if "<EOI>" not in line:
        if _QUESTIONABLE.search(line):
            # func+0x46/0x46 points past the function's end: a stale word, never a caller.
            stale = _PAST_END.search(line) is not None
            return line[line.find(" ? ") + 2:], stale or not use_questionable
        if line.endswith(" (unreliable)"):
            return line[:-13], not use_questionable
    return line, False


_PRINTK_TIME = re.compile(r"^(?:\<[0-9]+\>)?\[ *[0-9]+\.[0-9]+\]")
_REBOOT_HEADER = "Booting the kernel."


def _first_oops(lines: list[str], begin: int = 0,
                fatal_only: bool = False) -> tuple[Oops, int] | None:
    # The decompressor's "Booting the kernel." opens every x86 boot log: it means a reboot
    # only once a kernel has been running in this log.
    # After an orderly restart ("reboot: Restarting system") it means a reboot asked for.
    kernel_seen = restarting = False
    for i in range(begin, len(lines)):
        line = lines[i]
        if not kernel_seen and (_PRINTK_TIME.match(line) or _BOOT_BANNER.search(line)):
            kernel_seen = True
        if ORDERLY_RESTART in line:
            restarting = True
        elif _BOOT_BANNER.search(line):
            restarting = False
        if _HEADER_RE.search(line):
            if _REBOOT_HEADER in line and (not kernel_seen or restarting):
                continue
            for oops in LINUX_OOPSES:
                if oops.matches(line):
                    if fatal_only and not kinds.classify(line)[1]:
                        break
                    return _prefer_nearby(lines, oops, i)
    return None


#: Older kernels report a hard lockup through WARN(): the generic "WARNING: at ..." line
#: comes first and the message naming the lockup right after it. Prefer the message.
_NEARBY_WINDOW = 4


#: A CPU spinning with interrupts off is often first noticed by RCU (its stall timeout can be
#: shorter than the hard-lockup detector's period) and only then named by the NMI watchdog.
#: Both reports describe one stuck CPU; the hard-lockup one is the diagnosis, so it wins.
_SYMPTOM_OF_HARD_LOCKUP = re.compile(
    r"INFO: rcu_\w+ (?:self-)?detected(?: expedited)? stall|BUG: soft lockup"
)


#: One-line notices with no stack of their own that the kernel prints and survives. When the
#: kernel later dies of something else in the same log ("sched: RT throttling activated",
#: then "Watchdog detected hard LOCKUP" with every CPU in double_rq_lock), the death is the
#: report: the notice describes a symptom (RT tasks were spinning) and stays an alternative
#: title. syzkaller reports no RT throttling at all, so its title is the death's too.
_NOTICE_BEFORE_DEATH = re.compile(r"sched: RT throttling activated")


def _prefer_nearby(lines: list[str], oops: Oops, i: int) -> tuple[Oops, int]:
    if oops.header == "WARNING:":
        window = range(i + 1, min(len(lines), i + 1 + _NEARBY_WINDOW))
    elif _SYMPTOM_OF_HARD_LOCKUP.search(lines[i]):
        window = range(i + 1, len(lines))
    else:
        return oops, i
    for j in window:
        if "LOCKUP" in lines[j] and HARD_LOCKUP.matches(lines[j]):
            return HARD_LOCKUP, j
    return oops, i


_HEADERS = tuple({o.header for o in LINUX_OOPSES})
#: One C-level scan per line instead of a Python loop over every header.
_HEADER_RE = re.compile("|".join(re.escape(h) for h in sorted(_HEADERS, key=len, reverse=True)))


@dataclass
class _Cut:
    report: list[str]
    report_end: int  # lines of `report` before a second report started
    prefix: list[str]
    end_line: int


def _min_lines(oops_line: str) -> int:
    # KMSAN reports lack several lines KASAN ones have, so they are "long enough" sooner.
    return 16 if "BUG: KMSAN:" in oops_line else 22


def _find_report(lines: list[str], start: int, context: str, use_questionable: bool) -> _Cut:
    max_prefix = 50 if _TASK_CONTEXT.search(context) else 5
    prefix: list[str] = []
    for line in lines[:start]:
        ctx1 = extract_context(line)
        stripped, questionable = _strip_prefix(line, ctx1, use_questionable)
        if ctx1 == context and stripped and not questionable:
            prefix.append(stripped)
            if len(prefix) > max_prefix:
                prefix.pop(0)
    report: list[str] = []
    report_end = 0
    second = False
    text_lines = 0
    skip_text = cpu_traceback = False
    end_line = start
    oops_line = lines[start]
    for i in range(start, min(len(lines), start + MAX_REPORT_LINES)):
        line = lines[i]
        ctx1 = extract_context(line)
        stripped, questionable = _strip_prefix(line, ctx1, use_questionable)
        is_oops_line = i == start
        if _HEADER_RE.search(line):
            for oops in LINUX_OOPSES:
                if not oops.matches(line):
                    continue
                end_line = i
                if not is_oops_line and not second and not any(
                    r.search(line) for r in REPORT_START_IGNORES
                ):
                    second = True
        if not is_oops_line and not second and any(p in line for p in INFO_MESSAGES_WITH_STACK):
            second = True
        if not is_oops_line and (
            questionable
            or (ctx1 != context and (not cpu_traceback or not _CPU_CONTEXT.search(ctx1)))
        ):
            continue
        text_lines += 1
        skip_line = skip_text
        if "Disabling lock debugging due to kernel taint" in line:
            skip_line = True
        elif "Sending NMI from CPU" in line:
            # An all-CPU backtrace follows: keep the other CPUs' lines too.
            cpu_traceback = True
        elif (
            "Kernel panic - not syncing" in line
            or "WARNING: possible circular locking dependency detected" in line
        ) and text_lines > _min_lines(oops_line):
            # The panic_on_warn tail (or the deadlock report an oops provokes) repeats
            # what is already above; once the real report is long enough, cut it.
            skip_text = skip_line = True
        if not is_oops_line and skip_line:
            continue
        report.append(stripped)
        if not second or (context and context != _CONSOLE):
            report_end = len(report)
    return _Cut(report, report_end, prefix, end_line)


def _join(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return "".join(ln + "\n" for ln in lines)


def _frames_of(report: str) -> tuple[str, ...]:
    out: list[str] = []
    for line in report.split("\n"):
        m = RIP_FRAME.search(line) if ("RIP:" in line or "IP:" in line) else None
        if m is None:
            for fre in FRAME_RES:
                m = fre.search(line)
                if m is not None:
                    break
        if m is None:
            continue
        name = next((demangle(g) for g in m.groups() if g), None)
        if name and (not out or out[-1] != name):
            out.append(name)
            if len(out) >= MAX_REPORT_FRAMES:
                break
    return tuple(out)


def _cpu_and_task(first_line: str, report: str) -> tuple[int | None, str | None]:
    cpu: int | None = None
    task: str | None = None
    m = _CPU_IN_TITLE_LINE.search(first_line)
    if m is not None:
        cpu = int(next(g for g in m.groups() if g is not None))
    h = _HUNG_TASK.search(first_line)
    if h is not None:
        task = f"{h.group(1)}:{h.group(2)}"
    c = _CPU_LINE.search(report)
    if c is not None:
        if cpu is None:
            cpu = int(c.group(1))
        if task is None:
            task = f"{c.group(3)}:{c.group(2)}"
    return cpu, task


def _decode(text: str | bytes) -> str:
    if isinstance(text, bytes):
        return text.decode("utf-8", errors="replace")
    return text


def parse_log(text: str | bytes, *, questionable_frames: bool = False) -> CrashReport | None:
    """The first crash in a console log, or None. Never raises on odd input.

    ``questionable_frames``: when a report yields no frame, retry counting "? func" frames
    (syzkaller's disabled fallback). Pass it for kernels built with CONFIG_UNWINDER_GUESS,
    whose every frame is printed with "?"; leave it off otherwise, since "?" frames are
    often stale return addresses from another call chain.
    """
    lines = console_lines(_decode(text))
    return parse_lines(lines, questionable_frames=questionable_frames)


def parse_lines(lines: list[str], *, questionable_frames: bool = False) -> CrashReport | None:
    """:func:`parse_log` on lines already normalised by :mod:`reprolab.detect.lines`."""
    log = "\n".join(lines)
    found = _first_oops(lines)
    if found is None:
        return _silent_reboot(lines)
    notice = None
    if _NOTICE_BEFORE_DEATH.search(lines[found[1]]):
        later = _first_oops(lines, found[1] + 1, fatal_only=True)
        if later is not None:
            notice, found = found, later
    rep = _titled_report(log, lines, found, questionable_frames)
    if notice is not None:
        rep = replace(rep, alt_titles=(*rep.alt_titles, _titled_report(
            log, lines, notice, questionable_frames).title))
    bt = crash_bt(lines)
    rep = _with_stuck_in(rep, bt)
    if rep.fatal:
        return replace(rep, fatal_title=rep.title, fatal_kind=rep.kind)
    fatal = _first_oops(lines, found[1] + 1, fatal_only=True)
    if fatal is None:
        return rep
    frep = _titled_report(log, lines, fatal, questionable_frames)
    return replace(rep, fatal_title=frep.title, fatal_kind=frep.kind)


def _titled_report(log: str, lines: list[str], found: tuple[Oops, int],
                   questionable_frames: bool) -> CrashReport:
    rep = _report_at(log, lines, *found)
    if questionable_frames and rep.corrupted_reason == CORRUPTED_NO_FRAMES:
        rep = _report_at(log, lines, *found, use_questionable=True)
    if rep.kind == kinds.RCU_STALL and rep.corrupted_reason == CORRUPTED_NO_FRAMES:
        # A stall seen from another CPU (or through a starved GP kthread) shows no stack of
        # the looping CPU; the soft-lockup report that follows does, for the same loop.
        later = _later_soft_lockup(lines, found[1])
        if later is not None:
            return _report_at(log, lines, *later, use_questionable=questionable_frames)
    return rep


@dataclass(frozen=True)
class CrashBacktrace:
    """One task's stack from crash's ``bt`` (``PID: .. TASK: .. CPU: ..`` and ``#N`` frames)."""

    cpu: int | None
    exception_rip: str | None
    frames: tuple[str, ...]


_BT_HEADER = re.compile(r"^PID: +\d+ +TASK: +[0-9a-f]+ +CPU: +(\d+) +COMMAND:")
_BT_FRAME = re.compile(r"^ {0,3}#\d+ \[[0-9a-f]+\] ([A-Za-z0-9_.]+) at [0-9a-f]+")
_BT_RIP = re.compile(r"^ *\[exception RIP: ([A-Za-z0-9_.]+)(?:\+\d+)?\]")
#: crash's own NMI/IPI plumbing on top of the interrupted stack.
_BT_PLUMBING = re.compile(
    r"crash_nmi_callback|nmi_handle|do_nmi|end_repeat_nmi|default_do_nmi|exc_nmi|"
    r"machine_kexec|__crash_kexec|crash_kexec|panic|nmi_|native_safe_halt"
)


def crash_bt(lines: list[str]) -> list[CrashBacktrace]:
    """The stacks of crash's ``bt`` output pasted into a log (field reports often carry one)."""
    out: list[CrashBacktrace] = []
    cpu: int | None = None
    rip: str | None = None
    frames: list[str] = []
    inside = False
    for line in lines:
        if "#" not in line and "PID:" not in line and "exception RIP" not in line:
            continue
        h = _BT_HEADER.match(line)
        if h is not None:
            if inside:
                out.append(CrashBacktrace(cpu, rip, tuple(frames)))
            inside, cpu, rip, frames = True, int(h.group(1)), None, []
            continue
        if not inside:
            m = _BT_FRAME.match(line)
            if m is None:
                m2 = _BT_RIP.match(line)
                if m2 is None:
                    continue
                rip = rip or m2.group(1)
            inside = True
            if m is not None:
                frames.append(m.group(1))
            continue
        m = _BT_FRAME.match(line)
        if m is not None:
            if len(frames) < MAX_REPORT_FRAMES:
                frames.append(m.group(1))
            continue
        r = _BT_RIP.match(line)
        if r is not None and rip is None:
            rip = r.group(1)
    if inside:
        out.append(CrashBacktrace(cpu, rip, tuple(frames)))
    return out


#: Kinds where a CPU is stuck: their reports get a ``stuck_in`` function.
STUCK_KINDS = frozenset({kinds.HARD_LOCKUP, kinds.SOFT_LOCKUP, kinds.RCU_STALL,
                         kinds.SPINLOCK_LOCKUP})
#: What the detectors and the interrupt that runs them put on top of the stuck stack.
_DETECTOR_FRAMES = re.compile(
    r"^(?:dump_stack|show_regs|show_stack|nmi_|watchdog|perf_|__perf|x86_pmu|intel_pmu|"
    r"amd_pmu|_pmu_|arch_trigger|trigger_|rcu_|print_cpu_stall|check_cpu_stall|"
    r"update_process_times|tick_|__hrtimer|hrtimer_|__sysvec|sysvec_|asm_sysvec|"
    r"smp_apic_timer|apic_timer|local_apic|irq_exit|__irq_exit|handle_irq|do_IRQ|"
    r"el1h_|el1_interrupt|gic_|warn_slowpath|__warn|panic|do_nmi|end_repeat_nmi|"
    r"default_do_nmi|exc_nmi|asm_exc_nmi|lockup_detector|softlockup_fn)"
)
_RIP_LINE = re.compile(r"\b(?:RIP|EIP|NIP|pc |PC is at|IP)")
#: 2.6/3.x i386 and ARM: "EIP is at _raw_spin_lock+0x25/0x30", "PC is at func+0x10/0x20".
_IS_AT = re.compile(r"\b(?:EIP|RIP|IP|NIP|PC|pc) is at ([A-Za-z0-9_.]+)")


def _stuck_in(rep: CrashReport, bts: list[CrashBacktrace]) -> str | None:
    for bt in bts:
        if bt.exception_rip and (rep.cpu is None or bt.cpu is None or bt.cpu == rep.cpu):
            return bt.exception_rip
    for line in rep.report.split("\n"):
        if _RIP_LINE.search(line) is None:
            continue
        at = _IS_AT.search(line)
        if at is not None and not _DETECTOR_FRAMES.search(at.group(1)):
            return at.group(1)
        m = RIP_FRAME.search(line)
        if m is not None:
            name = next((demangle(g) for g in m.groups() if g), None)
            if name and not _DETECTOR_FRAMES.search(name):
                return name
    for bt in bts:
        if rep.cpu is None or bt.cpu is None or bt.cpu == rep.cpu:
            for f in bt.frames:
                if not _DETECTOR_FRAMES.search(f) and not _BT_PLUMBING.search(f):
                    return f
    for f in rep.frames:
        if not _DETECTOR_FRAMES.search(f):
            return f
    return None


def _with_stuck_in(rep: CrashReport, bts: list[CrashBacktrace]) -> CrashReport:
    if rep.kind not in STUCK_KINDS:
        return rep
    stuck = _stuck_in(rep, bts)
    if stuck is None:
        return rep
    rip = next((bt.exception_rip for bt in bts if bt.exception_rip
                and (rep.cpu is None or bt.cpu is None or bt.cpu == rep.cpu)), None)
    if rep.kind == kinds.HARD_LOCKUP and rip is not None:
        # crash read the RIP the NMI interrupted from the dump: exact, where the console's
        # unwinder often shows only "?" frames. Hard-lockup titles name the RIP.
        title = f"BUG: hard lockup in {rip}"
        return replace(rep, stuck_in=stuck, title=title, frame=rip, corrupted=False,
                       corrupted_reason="", alt_titles=(f"stall in {rip}",),
                       type=title_type(title))
    return replace(rep, stuck_in=stuck)


_BOOT_BANNER = re.compile(r"(?:^|\] )Linux version [0-9]")


def _silent_reboot(lines: list[str]) -> CrashReport | None:
    """A second boot banner with no crash before it: the guest reset without a word (triple
    fault, hardware watchdog). Same title as syzkaller's "Booting the kernel." rule."""
    banners = [i for i, line in enumerate(lines) if _BOOT_BANNER.search(line)]
    # A boot after an orderly restart ("reboot: Restarting system") was asked for.
    unexpected = [i for prev, i in itertools.pairwise(banners)
                  if not any(ORDERLY_RESTART in line for line in lines[prev:i])]
    if not unexpected:
        return None
    i = unexpected[0]
    lo = max(0, i - 5)
    return CrashReport(
        title="unexpected kernel reboot", alt_titles=(), kind=kinds.REBOOT, frame=None,
        corrupted=False, report=_join(lines[lo : i + 1]), type="REBOOT", fatal=True,
        start=sum(len(ln) + 1 for ln in lines[:i]),
        end=sum(len(ln) + 1 for ln in lines[: i + 1]),
    )


def _later_soft_lockup(lines: list[str], start: int) -> tuple[Oops, int] | None:
    for j in range(start + 1, len(lines)):
        if "BUG: soft lockup" in lines[j]:
            for oops in LINUX_OOPSES:
                if oops.matches(lines[j]):
                    return oops, j
    return None


def _report_at(log: str, lines: list[str], oops: Oops, start: int,
               use_questionable: bool = False) -> CrashReport:
    context = extract_context(lines[start])
    if not context:
        # A header line that lost its timestamp (cut by the line before it, or a console
        # that joined mid-line) is followed by the kernel's stamped lines: follow those.
        following = [extract_context(ln) for ln in lines[start + 1 : start + 3] if ln.strip()]
        if following and all(c == _CONSOLE for c in following):
            context = _CONSOLE
    cut = _find_report(lines, start, context, use_questionable)
    body = _join(cut.report)
    desc = extract_description(_join(cut.report[: cut.report_end]), oops)
    prefix = cut.prefix
    if not desc.title:
        prefix = []
        body = _join(lines[start : cut.end_line + 1])
        desc = extract_description(body, oops)
    title = desc.title or lines[start].strip()
    reason = desc.corrupted_reason or is_corrupted(title, body, desc.fmt)
    if _GCE_HANGUP in log:
        reason = reason or "console connection lost"
    title = sanitize_title(title)
    alts = tuple(dict.fromkeys(sanitize_title(a) for a in desc.alt_titles))
    first = _strip_prefix(lines[start], context)[0]
    kind, fatal = kinds.classify(first)
    frame = title_frame(title)
    if kind == kinds.HARD_LOCKUP and reason == CORRUPTED_NO_FRAMES:
        # Without a readable RIP or stack the lockup is still real; name it without a frame.
        title, frame, alts = "BUG: hard lockup", None, ()
    report_text = _join(prefix) + body
    cpu, task = _cpu_and_task(first, report_text)
    if cpu is None:
        cm = re.search(r"\[ *C(\d+)\]", context)
        cpu = int(cm.group(1)) if cm else None
    offset = sum(len(ln) + 1 for ln in lines[:start])
    return CrashReport(
        title=title,
        alt_titles=alts,
        kind=kind,
        frame=frame,
        corrupted=bool(reason),
        report=report_text,
        cpu=cpu,
        task=task,
        frames=_frames_of(body),
        type=title_type(title),
        fatal=fatal,
        corrupted_reason=reason,
        start=offset,
        end=sum(len(ln) + 1 for ln in lines[: cut.end_line + 1]),
    )
