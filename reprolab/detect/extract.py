"""Turn a cut report into a title: pick the rule, find the guilty frame, fill the template.

Mirrors syzkaller's extractDescription/extractStackFrame so titles group the same way; the
comments say why each step exists rather than restating the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from reprolab.detect.demangle import demangle
from reprolab.detect.rules import (
    CORRUPTED_LINES,
    FRAME_RES,
    PARSE_STACK,
    SKIP_PATTERNS,
    STACK_START_RES,
    STRIP_FRAME_PREFIXES,
    Oops,
    OopsFormat,
    Part,
    StackFmt,
)

CORRUPTED_NO_FRAMES = "extracted no frames"
_SLOT = re.compile(r"%\[(\d+)\][vs]")


@dataclass(frozen=True)
class Frame:
    canonical: str  # syscall prefixes stripped, or the extractor's bucket name
    raw: str


@dataclass(frozen=True)
class Description:
    title: str
    corrupted_reason: str
    alt_titles: tuple[str, ...]
    fmt: OopsFormat | None
    frames: tuple[str, ...]  # every frame seen while looking for the guilty one


def go_format(template: str, args: list[str]) -> str:
    """Fill ``%[N]v`` slots; a missing argument renders like Go does, visibly wrong."""

    def slot(m: re.Match[str]) -> str:
        i = int(m.group(1)) - 1
        return args[i] if 0 <= i < len(args) else "%!v(BADINDEX)"

    return _SLOT.sub(slot, template)


def strip_frame(frame: str) -> str:
    """Pick the shortest name among the syscall-prefix strippings, as syzkaller does."""
    best = frame
    for prefix in STRIP_FRAME_PREFIXES:
        if frame.startswith(prefix) and len(frame) - len(prefix) < len(best):
            best = frame[len(prefix):]
    return best


@lru_cache(maxsize=256)
def _skip_re(extra: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(SKIP_PATTERNS + extra))


def _matches_any(line: str, res: tuple[re.Pattern[str], ...]) -> bool:
    return any(r.search(line) for r in res)


def _append_frames(frames: list[str], match: re.Match[str] | None, skip: re.Pattern[str],
                   seen: list[str]) -> None:
    if match is None:
        return
    for group in match.groups():
        if group is None:
            continue
        group = demangle(group)
        seen.append(group)
        if not skip.search(group):
            frames.append(group)


class _Walker:
    """One pass of parts over the report lines (syzkaller's extractStackFrameImpl)."""

    def __init__(self, stack: StackFmt, skip: re.Pattern[str]) -> None:
        self.stack = stack
        self.skip = skip
        self.seen: list[str] = []

    def pick(self, raw: list[str]) -> Frame | None:
        if not raw:
            return None
        stripped = [strip_frame(f) for f in raw]
        if self.stack.extractor is None:
            return Frame(stripped[0], raw[0])
        frame, idx = self.stack.extractor(stripped)
        return Frame(frame, raw[idx]) if frame else None

    def run(self, text: str, parts: tuple[Part, ...]) -> tuple[list[Frame], bool]:
        lines = text.split("\n")
        pos = 0
        raw: list[str] = []
        results: list[Frame] = []
        ok = True
        traces = 0
        idx = 0
        while True:
            if idx == len(parts) or (parts[idx] is PARSE_STACK and traces > 0):
                key = self.pick(raw)
                if key is None:
                    key, ok = Frame("corrupted", "corrupted"), False
                results.append(key)
                raw = []
            if idx == len(parts):
                break
            part = parts[idx]
            if part is PARSE_STACK:
                traces += 1
                while pos < len(lines):
                    ln = lines[pos]
                    pos += 1
                    if _matches_any(ln, CORRUPTED_LINES):
                        ok = False
                        break
                    if _matches_any(ln, STACK_START_RES):
                        break
                    nxt = parts[idx + 1] if idx + 1 < len(parts) else None
                    if isinstance(nxt, re.Pattern):
                        m = nxt.search(ln)
                        if m is not None:
                            _append_frames(raw, m, self.skip, self.seen)
                            idx += 1
                            break
                    fm = None
                    for fre in FRAME_RES:
                        fm = fre.search(ln)
                        if fm is not None:
                            break
                    _append_frames(raw, fm, self.skip, self.seen)
            else:
                assert isinstance(part, re.Pattern)
                while pos < len(lines):
                    ln = lines[pos]
                    pos += 1
                    if _matches_any(ln, CORRUPTED_LINES):
                        ok = False
                        break
                    m = part.search(ln)
                    if m is None:
                        continue
                    _append_frames(raw, m, self.skip, self.seen)
                    break
            idx += 1
        return results, ok


def extract_stack_frames(stack: StackFmt, text: str) -> tuple[list[Frame], bool, list[str]]:
    walker = _Walker(stack, _skip_re(stack.skip))
    frames, ok = walker.run(text, stack.parts)
    if not ok and stack.parts2:
        walker.seen = []
        frames, ok = walker.run(text, stack.parts2)
    if not ok and stack.parts3:
        walker.seen = []
        frames, ok = walker.run(text, stack.parts3)
    return frames, ok, walker.seen


def _stripped_variants(prefix: list[str], frames: list[Frame]) -> list[list[str]]:
    """Titles with the raw frame and each single-prefix stripping, for deduplication."""
    out: list[list[str]] = []
    for i in range(len(STRIP_FRAME_PREFIXES) + 1):
        strip = "" if i == 0 else STRIP_FRAME_PREFIXES[i - 1]
        add = i == 0
        names = []
        for f in frames:
            trimmed = f.raw[len(strip):] if strip and f.raw.startswith(strip) else f.raw
            add = add or trimmed != f.raw
            names.append(trimmed)
        if add:
            out.append(prefix + names)
    return out


#: Where a rule may start: at most this many header occurrences per line, and this many in
#: all. Rules such as "BUG: .*still has locks held!" or the multi-line report patterns would
#: otherwise be retried at every occurrence of their header and turn quadratic on hostile
#: input; a real report has its header once, at the start.
MAX_STARTS_PER_LINE = 4
MAX_STARTS = 16
#: Title rules see this many lines of a report: every rule finds what it needs far sooner
#: (an all-CPU backtrace comes after the stuck CPU's own stack), and the bound keeps the
#: work per report constant.
MAX_TITLE_LINES = 400


def anchored_search(regex: re.Pattern[str], text: str, header: str) -> re.Match[str] | None:
    """``regex.search(text)`` tried only where ``header`` starts (bounded, see above).

    Every rule starts with its header, so the first match found this way is the first match.
    """
    pos = text.find(header)
    line_end = -1
    per_line = tries = 0
    while pos >= 0 and tries < MAX_STARTS:
        if pos > line_end:
            line_end = text.find("\n", pos)
            if line_end < 0:
                line_end = len(text)
            per_line = 0
        if per_line >= MAX_STARTS_PER_LINE:
            pos = text.find(header, line_end)
            continue
        per_line += 1
        tries += 1
        m = regex.match(text, pos)
        if m is not None:
            return m
        pos = text.find(header, pos + 1)
    return None


def title_window(text: str) -> str:
    """The first :data:`MAX_TITLE_LINES` lines of ``text``."""
    end = -1
    for _ in range(MAX_TITLE_LINES):
        end = text.find("\n", end + 1)
        if end < 0:
            return text
    return text[: end + 1]


def extract_description(text: str, oops: Oops) -> Description:
    """Choose the rule whose title matches earliest and render its title."""
    text = title_window(text)
    start = len(text)
    desc = ""
    corrupted = ""
    alts: list[str] = []
    chosen: OopsFormat | None = None
    matched_title = False
    seen: list[str] = []
    for f in oops.formats:
        m = anchored_search(f.title, text, oops.header)
        if m is None or m.start() > start:
            continue
        if m.start() == start and desc:
            continue
        if m.start() < start:
            desc, chosen, start = "", None, m.start()
        matched_title = True
        if f.report is not None:
            m = anchored_search(f.report, text, oops.header)
            if m is None:
                continue
        prefix = [g if g is not None else "" for g in m.groups()]
        frames: list[Frame] = []
        corrupted = ""
        if f.stack is not None:
            frames, ok, seen = extract_stack_frames(f.stack, text[m.start():])
            if not ok:
                corrupted = CORRUPTED_NO_FRAMES
        args = prefix + [fr.canonical for fr in frames]
        desc = go_format(f.fmt, args)
        alts.extend(go_format(a, args) for a in f.alt)
        for variant in _stripped_variants(prefix, frames):
            alt_title = go_format(f.fmt, variant)
            if alt_title != desc:
                alts.append(alt_title)
            alts.extend(go_format(a, variant) for a in f.alt)
        alts = list(dict.fromkeys(alts))
        chosen = f
    if not desc:
        if matched_title:
            corrupted = "matched title but not report regexp"
        pos = text.find(oops.header)
        if pos != -1:
            end = text.find("\n", pos)
            desc = text[pos:] if end == -1 else text[pos:end]
    if not corrupted and chosen is not None and chosen.corrupted:
        corrupted = "report format is marked as corrupted"
    return Description(desc, corrupted, tuple(alts), chosen, tuple(seen))


def is_corrupted(title: str, report: str, fmt: OopsFormat | None) -> str:
    """Why the report cannot be trusted ("" when it can): no stack where one is expected."""
    if re.search(r"\[ *[0-9]+\.[0-9]+\]", title):
        return "title matches corrupted regexp"
    if fmt is None or fmt.no_stack_trace:
        return ""
    has_stack = False
    for key in STACK_START_RES:
        m = key.search(report)
        if m is None:
            continue
        frames = report[m.start():].split("\n")
        if len(frames) < 4:
            return "call trace is missed"
        bad = True
        for ln in frames[1:16]:
            if _matches_any(ln, STACK_START_RES):
                break
            if "(stack is not available)" in ln or _matches_any(ln, FRAME_RES):
                has_stack, bad = True, False
                break
        if bad:
            return "no frames in a stack trace"
    return "" if has_stack else "no stack trace in report"
