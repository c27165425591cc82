"""Just enough of Kconfig to say why an option did not land.

``make olddefconfig`` drops a requested option silently when a dependency is unmet (LKDTM
without RUNTIME_TESTING_MENU, TMPFS without SHMEM). To turn that into an error that names
the culprit, this module reads the tree's Kconfig files the way kconfig does for the parts
that matter here: ``source`` (from the top-level Kconfig, with ``$(SRCARCH)``), the
conditions a symbol inherits from enclosing ``if``/``menu``/``choice`` blocks, its own
``depends on`` lines, whether it has a prompt, and who ``select``\\ s it. It then evaluates
those conditions against the final .config with Kconfig's tristate logic.

Not a full Kconfig implementation (no defaults, ranges or visibility): it only explains an
outcome the kernel's own kconfig already decided.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_SOURCE_KW = ("source", "osource", "rsource", "orsource")
_TYPES = ("bool", "tristate", "string", "int", "hex")
_TOKEN = re.compile(
    r'\s*(\$\([^)]*\)|"[^"]*"|\'[^\']*\'|&&|\|\||!=|<=|>=|[!()=<>]|[A-Za-z0-9_.-]+)'
)
_CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET_LINE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Condition:
    """One conjunct a symbol needs, and where it comes from."""

    expr: str
    origin: str


@dataclass(frozen=True)
class SymbolDef:
    """One ``config``/``menuconfig`` definition of a symbol (a symbol may have several)."""

    name: str
    location: str
    has_prompt: bool
    in_choice: bool
    conditions: tuple[Condition, ...]


@dataclass
class KconfigIndex:
    """Every symbol definition reachable from the top-level Kconfig, plus reverse selects."""

    defs: dict[str, list[SymbolDef]] = field(default_factory=dict)
    #: symbol -> [(selecting symbol, its ``if`` condition or "")]
    selected_by: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def known(self, name: str) -> bool:
        return name in self.defs


def read_config(path: Path) -> dict[str, str]:
    """A .config as ``{NAME: value}`` (names without ``CONFIG_``; unset options as ``n``)."""
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _CONFIG_LINE.match(line)
        if match:
            values[match[1].removeprefix("CONFIG_")] = match[2].strip('"')
            continue
        unset = _UNSET_LINE.match(line)
        if unset:
            values[unset[1].removeprefix("CONFIG_")] = "n"
    return values


def load(srctree: Path, *, srcarch: str = "x86") -> KconfigIndex:
    """Parse the Kconfig files of ``srctree`` as seen when building for ``srcarch``."""
    index = KconfigIndex()
    _Parser(srctree, srcarch, index).parse_file("Kconfig", ())
    return index


@dataclass
class _Frame:
    kind: str  # "if", "menu", "choice"
    conditions: list[Condition]


class _Parser:
    def __init__(self, srctree: Path, srcarch: str, index: KconfigIndex) -> None:
        self.srctree = srctree
        self.macros = {"SRCARCH": srcarch, "ARCH": srcarch, "HEADER_ARCH": srcarch}
        self.index = index
        self.seen: set[str] = set()

    def parse_file(self, rel: str, inherited: tuple[Condition, ...]) -> None:
        path = self.srctree / rel
        if rel in self.seen or not path.is_file():
            return
        self.seen.add(rel)
        frames: list[_Frame] = []
        entry: dict[str, object] | None = None  # the config/menu/choice being read
        help_indent: int | None = None
        in_help = False

        def flush() -> None:
            nonlocal entry
            if entry is not None and entry["kind"] == "config":
                self._add(entry, inherited, frames)
            entry = None

        for number, line in _logical_lines(path):
            stripped = line.strip()
            if in_help:
                if not stripped:
                    continue
                indent = len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())
                if help_indent is None:
                    help_indent = indent
                if indent >= help_indent and indent > 0:
                    continue
                in_help = False
            stripped = _strip_comment(stripped)
            if not stripped:
                continue
            keyword, _, rest = stripped.partition(" ")
            rest = rest.strip()
            where = f"{rel}:{number}"
            if keyword in ("config", "menuconfig"):
                flush()
                entry = {"kind": "config", "name": rest, "where": where, "prompt": False,
                         "depends": [], "choice": any(f.kind == "choice" for f in frames)}
            elif keyword in ("menu", "choice"):
                flush()
                frame = _Frame(keyword, [])
                frames.append(frame)
                entry = {"kind": keyword, "frame": frame, "where": where}
            elif keyword in ("endmenu", "endchoice", "endif"):
                flush()
                if frames:
                    frames.pop()
            elif keyword == "if":
                flush()
                frames.append(_Frame("if", [Condition(rest, f"if {rest} ({where})")]))
            elif keyword in ("comment", "mainmenu"):
                flush()
                entry = {"kind": "comment"}
            elif keyword in _SOURCE_KW:
                flush()
                target = self._expand(rest.strip('"'))
                conds = inherited + tuple(c for f in frames for c in f.conditions)
                if keyword.startswith(("r", "or")):
                    target = str(Path(rel).parent / target)
                for match in sorted(self.srctree.glob(target)) if "*" in target else [
                    self.srctree / target
                ]:
                    self.parse_file(str(match.relative_to(self.srctree)), conds)
            elif keyword in ("help", "---help---"):
                in_help, help_indent = True, None
            elif entry is None:
                continue
            elif keyword == "depends" and rest.startswith("on"):
                expr = rest[2:].strip()
                if entry["kind"] == "config":
                    deps = entry["depends"]
                    assert isinstance(deps, list)
                    deps.append(Condition(expr, f"depends on {expr} ({where})"))
                elif entry["kind"] in ("menu", "choice"):
                    menu = entry["frame"]
                    assert isinstance(menu, _Frame)
                    menu.conditions.append(
                        Condition(expr, f"{entry['kind']} at {entry['where']} depends on {expr}")
                    )
            elif entry["kind"] == "config" and (
                (keyword in _TYPES and rest.startswith('"')) or keyword == "prompt"
            ):
                entry["prompt"] = True
            elif entry["kind"] == "config" and keyword == "select":
                target, _, cond = rest.partition(" if ")
                self.index.selected_by.setdefault(target.strip(), []).append(
                    (str(entry["name"]), cond.strip())
                )
        flush()

    def _add(
        self, entry: Mapping[str, object], inherited: tuple[Condition, ...], frames: list[_Frame]
    ) -> None:
        name = str(entry["name"])
        own = entry["depends"]
        assert isinstance(own, list)
        conds = inherited + tuple(c for f in frames for c in f.conditions) + tuple(own)
        self.index.defs.setdefault(name, []).append(
            SymbolDef(
                name=name,
                location=str(entry["where"]),
                has_prompt=bool(entry["prompt"]),
                in_choice=bool(entry["choice"]),
                conditions=conds,
            )
        )

    def _expand(self, text: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: self.macros.get(m[1], m[0]), text)


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, numbered by where they start."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        out.append((start, pending + raw))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i].strip()
    return line


class _Unknown(Exception):
    """The expression uses something this module cannot evaluate (a macro)."""


def evaluate(expr: str, values: Mapping[str, str]) -> int | None:
    """Kconfig tristate value of ``expr`` (0 n, 1 m, 2 y), or None if it cannot be judged."""
    tokens: list[str] = [str(t) for t in _TOKEN.findall(expr) if t]
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise _Unknown(expr)
        pos += 1
        return tokens[pos - 1]

    def value_of(token: str) -> str:
        if token.startswith("$("):
            raise _Unknown(token)
        if token[0] in "\"'":
            return token[1:-1]
        if token in ("y", "m", "n"):
            return token
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", token):
            return token
        return str(values.get(token, "n" if re.fullmatch(r"[A-Z0-9_]+", token) else token))

    def tri(text: str) -> int:
        return {"y": 2, "m": 1}.get(text, 0)

    def primary() -> int:
        token = take()
        if token == "!":
            return 2 - primary()
        if token == "(":
            result = disjunction()
            if take() != ")":
                raise _Unknown(expr)
            return result
        op = peek()
        if op in ("=", "!=", "<", ">", "<=", ">="):
            take()
            left, right = value_of(token), value_of(take())
            return 2 if _compare(left, op, right) else 0
        return tri(value_of(token))

    def conjunction() -> int:
        result = primary()
        while peek() == "&&":
            take()
            result = min(result, primary())
        return result

    def disjunction() -> int:
        result = conjunction()
        while peek() == "||":
            take()
            result = max(result, conjunction())
        return result

    try:
        result = disjunction()
    except _Unknown:
        return None
    return result if pos == len(tokens) else None


def _compare(left: str, op: str, right: str) -> bool:
    if op in ("=", "!="):
        return (left == right) == (op == "=")
    try:
        lnum, rnum = int(left, 0), int(right, 0)
    except ValueError:
        return False
    return {"<": lnum < rnum, ">": lnum > rnum, "<=": lnum <= rnum, ">=": lnum >= rnum}[op]
