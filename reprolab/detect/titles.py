"""Title normalisation and crash types.

Numbers, addresses, PIDs and line numbers change between two occurrences of one bug, so they
become placeholders (ADDR, NUM, LINE, IP); titles are cut at 120 characters because
interleaved lines can make them arbitrarily long. Same rules as syzkaller's report.go.
"""

from __future__ import annotations

import re

_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"syz-executor\.?[0-9]+((/|:)[0-9]+)?"), "syz-executor"),
    (re.compile(r"syzkaller[0-9]+((/|:)[0-9]+)?"), "syzkaller"),
    (re.compile(r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}"), r"\1ADDR"),
    (re.compile(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"), "IP"),
    (re.compile(r"(\.\w+)(:[0-9]+)+", re.ASCII), r"\1:LINE"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+"), r"\1"),
    (re.compile(r"CPU#[0-9]+"), "CPU"),
    (re.compile(r"(\W)(\d+)(\W|$)", re.ASCII), r"\1NUM\3"),
    (re.compile(r"(\d+){7,}", re.ASCII), "NUM"),
)
MAX_TITLE_LEN = 120


def _replace_all(title: str) -> str:
    for regex, repl in _REPLACEMENTS:
        # Repeat until stable: matches can overlap ("0,1,2" needs several passes).
        for _ in range(64):
            new = regex.sub(repl, title)
            if new == title:
                break
            title = new
    return title


def sanitize_title(title: str) -> str:
    """Placeholders, then drop control/non-ASCII bytes, squeeze spaces, cut at 120 chars."""
    raw = _replace_all(title).encode("utf-8", errors="replace")
    out = bytearray()
    prev = 0x20
    for byte in raw[:MAX_TITLE_LEN]:  # bytes, as the reference cuts them
        if byte == 0x09:
            byte = 0x20
        elif byte < 0x20 or byte >= 0x7F:
            continue
        if byte == 0x20 and prev == 0x20:
            continue
        out.append(byte)
        prev = byte
    return out.decode("ascii").strip()


_FRAME_RE = re.compile(r".* in ((?:<[a-zA-Z0-9_: ]+>)?[a-zA-Z0-9_:]+)")


def title_frame(title: str) -> str | None:
    """The function a title names ("... in FUNC"), the last " in " winning.

    Demangled Rust methods ("<crate::Type>::method") are names too, though not C identifiers.
    """
    m = _FRAME_RE.match(title)
    return m.group(1) if m else None


#: syzkaller's crash types by title prefix (first match wins), plus this project's own.
_TYPES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("KFENCE: use-after-free write",), "KFENCE-USE-AFTER-FREE-WRITE"),
    (("KFENCE: use-after-free read", "KFENCE: use-after-free"), "KFENCE-USE-AFTER-FREE-READ"),
    (("KFENCE: invalid write", "KFENCE: out-of-bounds write"), "KFENCE-WRITE"),
    (("KFENCE: invalid read", "KFENCE: out-of-bounds read", "KFENCE: out-of-bounds"),
     "KFENCE-READ"),
    (("KFENCE: memory corruption",), "KFENCE-MEMORY-CORRUPTION"),
    (("KFENCE: invalid free",), "KFENCE-INVALID-FREE"),
    (("KMSAN: uninit-value",), "KMSAN-UNINIT-VALUE"),
    (("KMSAN: kernel-infoleak-after-free", "KMSAN: kernel-usb-infoleak-after-free",
      "KMSAN: use-after-free"), "KMSAN-USE-AFTER-FREE-READ"),
    (("KMSAN: kernel-infoleak", "KMSAN: kernel-usb-infoleak"), "KMSAN-INFO-LEAK"),
    (("KASAN: null-ptr-deref Write",), "KASAN-NULL-POINTER-DEREFERENCE-WRITE"),
    (("KASAN: null-ptr-deref Read",), "KASAN-NULL-POINTER-DEREFERENCE-READ"),
    (("BUG: unable to handle kernel NULL pointer dereference in",), "NULL-POINTER-DEREFERENCE"),
    (tuple(f"KASAN: {k} Write" for k in (
        "global-out-of-bounds", "out-of-bounds", "slab-out-of-bounds", "stack-out-of-bounds",
        "user-memory-access", "vmalloc-out-of-bounds", "wild-memory-access")), "KASAN-WRITE"),
    (tuple(f"KASAN: {k}" for k in (
        "global-out-of-bounds Read", "invalid-access Read", "out-of-bounds Read",
        "slab-out-of-bounds Read", "slab-out-of-bounds", "stack-out-of-bounds Read",
        "stack-out-of-bounds", "unknown-crash Read", "user-memory-access Read",
        "vmalloc-out-of-bounds Read", "wild-memory-access Read", "wild-memory-access")),
     "KASAN-READ"),
    (("KASAN: double-free or invalid-free", "KASAN: invalid-free"), "KASAN-INVALID-FREE"),
    (("KASAN: slab-use-after-free Write", "KASAN: use-after-free Write"),
     "KASAN-USE-AFTER-FREE-WRITE"),
    (("KASAN: slab-use-after-free Read", "KASAN: use-after-free Read", "KASAN: use-after-free"),
     "KASAN-USE-AFTER-FREE-READ"),
    (("BUG: corrupted list", "BUG: unable to handle kernel paging request"), "MEMORY_SAFETY_BUG"),
    (("WARNING: refcount bug",), "REFCOUNT_WARNING"),
    (("UBSAN: array-index-out-of-bounds",), "MEMORY_SAFETY_UBSAN"),
    (("KCSAN: data-race",), "KCSAN-DATARACE"),
    (("KCSAN: assert: race in",), "KCSAN-ASSERT"),
    (("BUG: bad unlock balance in", "BUG: held lock freed in", "BUG: rwlock", "BUG: spinlock",
      "BUG: still has locks held in", "BUG: using", "WARNING: bad unlock balance in",
      "WARNING: held lock freed in", "WARNING: lock held", "WARNING: locking bug in",
      "WARNING: nested lock was not taken in", "WARNING: still has locks held in",
      "WARNING: suspicious RCU usage in", "inconsistent lock state in", "possible deadlock in"),
     "LOCKDEP"),
    (("BUG: scheduling while atomic in", "BUG: sleeping function called from invalid context in"),
     "ATOMIC_SLEEP"),
    (("memory leak in",), "LEAK"),
    (("BUG: bad usercopy in", "kernel BUG"), "BUG"),
    (("WARNING in",), "WARNING"),
    (("BUG: stack guard page was hit in", "WARNING: corrupted",
      "WARNING: kernel stack frame pointer has bad value", "WARNING: kernel stack regs has bad"),
     ""),
    (("BUG: soft lockup in", "INFO: rcu detected stall in", "INFO: task can't die in",
      "INFO: task hung in", "BUG: hard lockup", "sched: RT throttling activated"), "HANG"),
    (("Alignment trap in", "BUG: Object already free", "Internal error in", "PANIC: double fault",
      "Unhandled fault in", "VFS: Busy inodes after unmount (use-after-free)",
      "VFS: Close: file count is zero (use-after-free)", "divide error in",
      "general protection fault in", "go runtime error", "invalid opcode in", "kernel panic:",
      "kernel stack overflow", "panic:", "rust_kernel panicked", "stack segment fault in",
      "trusty:", "unregister_netdevice: waiting for DEV to become free"), "DoS"),
    (("unexpected kernel reboot",), "REBOOT"),
    (("SYZFAIL", "SYZFATAL:"), "SYZ_FAILURE"),
    (("WARNING:",), "WARNING"),
    (("BUG:", "INFO:"), ""),
    (("KASAN:",), "KASAN-UNKNOWN"),
    (("KFENCE:",), "KFENCE-UNKNOWN"),
    (("KMSAN:",), "KMSAN-UNKNOWN"),
    (("UBSAN:",), "UBSAN"),
    (("KCSAN:",), "KCSAN-UNKNOWN"),
)


def title_type(title: str) -> str | None:
    """syzkaller-style crash type for a title, or None when it has no specific type."""
    for prefixes, typ in _TYPES:
        if title.startswith(prefixes):
            return typ or None
    return None
