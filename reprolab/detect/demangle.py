"""Rust v0 symbol demangling, paths only (no generic arguments), for stack frames.

Rust code in the kernel (binder, drivers) prints mangled frames such as
``_RNvMs3_NtCs..._11rust_binder7processNtB5_7Process10update_ref``; titles and skip rules
need the readable path (``<rust_binder::process::Process>::update_ref``), as syzkaller
gets from its demangler with parameters stripped. Anything unparsable is returned as is.
"""

from __future__ import annotations

_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASIC = {
    "a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32", "h": "u8",
    "i": "isize", "j": "usize", "l": "i32", "m": "u32", "n": "i128", "o": "u128", "s": "i16",
    "t": "u16", "u": "()", "v": "...", "x": "i64", "y": "u64", "z": "!", "p": "_",
}
_MAX_DEPTH = 64


class _Invalid(Exception):
    pass


class _Parser:
    def __init__(self, sym: str, pos: int = 0, depth: int = 0) -> None:
        self.sym, self.pos, self.depth = sym, pos, depth

    def peek(self) -> str:
        return self.sym[self.pos] if self.pos < len(self.sym) else ""

    def next(self) -> str:
        ch = self.peek()
        if not ch:
            raise _Invalid
        self.pos += 1
        return ch

    def eat(self, ch: str) -> bool:
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def b62(self) -> int:
        if self.eat("_"):
            return 0
        value = 0
        while not self.eat("_"):
            ch = self.next()
            if ch not in _B62:
                raise _Invalid
            value = value * 62 + _B62.index(ch)
        return value + 1

    def decimal(self) -> int:
        start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            raise _Invalid
        return int(self.sym[start : self.pos])

    def ident(self) -> str:
        if self.eat("s"):
            self.b62()
        punycode = self.eat("u")
        length = self.decimal()
        self.eat("_")
        name = self.sym[self.pos : self.pos + length]
        if len(name) != length:
            raise _Invalid
        self.pos += length
        return f"{{punycode {name}}}" if punycode else name

    def backref(self) -> _Parser:
        target = self.b62()
        if target >= self.pos or self.depth > _MAX_DEPTH:
            raise _Invalid
        return _Parser(self.sym, target, self.depth + 1)

    def path(self) -> str:
        tag = self.next()
        if tag == "C":
            return self.ident()
        if tag == "N":
            ns = self.next()
            parent = self.path()
            name = self.ident()
            if ns.isupper():
                label = {"C": "closure", "S": "shim"}.get(ns, ns)
                return f"{parent}::{{{label}{'#' if not name else ':' + name}}}"
            return f"{parent}::{name}"
        if tag in "MX":
            if self.eat("s"):
                self.b62()
            self.path()  # the impl's own path: not printed
            self_ty = self.type_()
            if tag == "X":
                return f"<{self_ty} as {self.path()}>"
            return f"<{self_ty}>"
        if tag == "Y":
            self_ty = self.type_()
            return f"<{self_ty} as {self.path()}>"
        if tag == "I":
            base = self.path()
            while not self.eat("E"):
                self.generic_arg()
            return base
        if tag == "B":
            return self.backref().path()
        raise _Invalid

    def generic_arg(self) -> None:
        if self.eat("L"):
            self.b62()
        elif self.eat("K"):
            self.const()
        else:
            self.type_()

    def const(self) -> None:
        if self.eat("B"):
            self.b62()
            return
        self.type_()
        if self.eat("p"):
            return
        self.eat("n")
        while not self.eat("_"):
            self.next()

    def type_(self) -> str:
        ch = self.peek()
        if ch in _BASIC:
            self.pos += 1
            return _BASIC[ch]
        if ch == "B":
            self.pos += 1
            return self.backref().type_()
        if ch in "CNMXYI":
            return self.path()
        self.pos += 1
        if ch in "RQ":
            if self.eat("L"):
                self.b62()
            return ("&" if ch == "R" else "&mut ") + self.type_()
        if ch in "PO":
            return ("*const " if ch == "P" else "*mut ") + self.type_()
        if ch == "S":
            return f"[{self.type_()}]"
        if ch == "A":
            inner = self.type_()
            self.const()
            return f"[{inner}; _]"
        if ch == "T":
            parts = []
            while not self.eat("E"):
                parts.append(self.type_())
            return "(" + ", ".join(parts) + ")"
        raise _Invalid  # fn pointers and dyn types do not name kernel frames


def demangle(symbol: str) -> str:
    """``_R...`` v0 symbols as a readable path; other names unchanged."""
    if not symbol.startswith("_R") or len(symbol) > 4096:
        return symbol
    parser = _Parser(symbol[2:])
    try:
        if parser.peek().isdigit():
            parser.decimal()
        return parser.path()
    except (_Invalid, RecursionError, ValueError):
        return symbol
