"""Building blocks of the crash rules: regex placeholders, stack formats, generic frames.

The rules follow syzkaller's pkg/report/linux.go (Apache-2.0), re-expressed in Python, so that
titles produced here group with the titles the kernel community already uses on syzbot. The
placeholders ({{PC}}, {{FUNC}}, {{SRC}}) keep each rule short and identical in spirit to the
reference, which is what makes the port checkable line by line against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

#: An extractor picks the guilty frame out of all frames of one stack; returns (frame, index)
#: or ("", -1). Stalls and hangs need one because their top frame is a random point in a loop.
Extractor = Callable[[list[str]], tuple[str, int]]


def compile_rule(pattern: str) -> re.Pattern[str]:
    """Expand syzkaller's placeholders so rules read like the kernel's own messages."""
    pattern = pattern.replace("{{ADDR}}", r"0x[0-9a-f]+")
    pattern = pattern.replace("{{PC}}", r"\[\<?(?:0x)?[0-9a-f]+\>?\]")
    pattern = pattern.replace("{{FUNC}}", r"([a-zA-Z0-9_]+)(?:\.|\+)")
    pattern = pattern.replace("{{SRC}}", r"([a-zA-Z0-9\-_/.]+\.[a-z]+:[0-9]+)")
    # ASCII: Go's \d, \w and \s (RE2) are ASCII-only, and titles must match the reference's.
    return re.compile(pattern, re.ASCII)


class _ParseStack:
    """Sentinel part: "parse a stack trace from here" (a distinct object, never a regex)."""

    def __repr__(self) -> str:
        return "PARSE_STACK"


PARSE_STACK = _ParseStack()
Part = re.Pattern[str] | _ParseStack


@dataclass(frozen=True)
class StackFmt:
    """How the guilty frame is found: consecutive parts, an optional fallback, extra skips."""

    parts: tuple[Part, ...]
    parts2: tuple[Part, ...] = ()
    skip: tuple[str, ...] = ()
    extractor: Extractor | None = None
    #: Tried when parts and parts2 find nothing (a format syzkaller's corpus never shows).
    parts3: tuple[Part, ...] = ()


@dataclass(frozen=True)
class OopsFormat:
    """One title rule: `title` locates it, `report` (if any) must also match to trust it."""

    title: re.Pattern[str]
    fmt: str
    report: re.Pattern[str] | None = None
    alt: tuple[str, ...] = ()
    stack: StackFmt | None = None
    no_stack_trace: bool = False
    corrupted: bool = False


@dataclass(frozen=True)
class Oops:
    """A header substring that starts a report, its title rules and its look-alikes."""

    header: str
    formats: tuple[OopsFormat, ...]
    suppressions: tuple[re.Pattern[str], ...] = field(default_factory=tuple)
    #: For words anyone prints (``WARNING:``, ``INFO:``, ``BUG:``): the line counts only when
    #: one of these matches where the header starts, i.e. it has the shape the kernel prints.
    #: Firmware, bootloaders, init systems and user programs print these words too.
    shapes: tuple[re.Pattern[str], ...] = ()

    def matches(self, line: str) -> bool:
        pos = line.find(self.header)
        if pos < 0:
            return False
        if self.shapes and not any(s.match(line, pos, pos + SHAPE_SPAN) for s in self.shapes):
            # A kernel message of its own wording ("WARNING: foo" from a driver) still counts
            # when the printk timestamp proves the kernel printed it, right before the word.
            m = _PRINTK_PREFIX.match(line)
            if m is None or m.end() != pos:
                return False
        return not any(s.search(line) for s in self.suppressions)


#: A kernel message names what it is within its first few hundred characters; looking no
#: further keeps the check cheap on hostile lines.
SHAPE_SPAN = 512
_PRINTK_PREFIX = re.compile(r"(?:<[0-9]{1,3}>)?\[ *[0-9]+\.[0-9]+\](?:\[ *[CT][0-9]+\])? ")


RIP_FRAME = compile_rule(
    r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x[0-9a-f]+"
    r"|(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))"
)
CALL_TRACE = compile_rule(r"(?:Call (?:T|t)race:)|(?:Backtrace:)")

STACK_START_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"Call (?:T|t)race"),
    re.compile(r"Allocated:"),
    re.compile(r"Allocated by task [0-9]+:"),
    re.compile(r"Freed:"),
    re.compile(r"Freed by task [0-9]+:"),
    # 'backtrace:' but not 'stack backtrace:'; kmemleak may add a crc.
    re.compile(r"[^k] backtrace(?: \(crc [0-9A-Fa-f]*\))?:"),
    re.compile(r"Backtrace:"),
    re.compile(r"Uninit was stored to memory at"),
)

FRAME_RES: tuple[re.Pattern[str], ...] = (
    # Old x86 kernels print context switches inline: " <<EOE>>  <IRQ>  [<pc>] func+0x..".
    compile_rule(r"^ *(?:<<?[A-Z]+>>? +)*(?:{{PC}} ){0,2}{{FUNC}}"),
    # ARM prints "[<pc>] (func) from [<pc>] (caller+...)": take both.
    compile_rule(r"^ *{{PC}} \(([a-zA-Z0-9_.]+)\) from {{PC}} \({{FUNC}}"),
    # 2.6-era ARM: "[<pc>](func+0x0/0xf8) from [<pc>](caller+0x84/0x1dc)".
    compile_rule(r"^ *{{PC}} ?\({{FUNC}}0x[0-9a-f]+/0x[0-9a-f]+\) from {{PC}} ?\({{FUNC}}"),
    # ARM since 5.x: "func from caller+0x10/0x14".
    compile_rule(r"^ *([a-zA-Z0-9_.]+) from {{FUNC}}0x[0-9a-f]+/0x[0-9a-f]+"),
    # crash's `bt`: " #4 [ffff88203f283e88] tg_unthrottle_up at ffffffff810c7a68".
    compile_rule(r"^ *#[0-9]+ \[[0-9a-f]+\] ([a-zA-Z0-9_.]+) at [0-9a-f]+"),
)

#: Generic plumbing that never names a bug: sanitizers, panic/report helpers, locking,
#: allocators, string/list helpers, device-core teardown, printk, workqueue flushing.
SKIP_PATTERNS: tuple[str, ...] = (
    "__sanitizer", "__asan", "kasan", "hwasan", "__msan", "kmsan", "kcsan_setup_watchpoint",
    "check_memory_region", "check_heap_object", "check_object", "read_word_at_a_time",
    "(read|write)_once_.*nocheck", "print_address_description", "panic", "invalid_op",
    "report_bug", "fixup_bug", "print_report", "print_usage_bug", "do_error",
    r"_trap$|do_trap", "show_stack", "dump_stack", "walk_stack", "dump_backtrace",
    "warn_slowpath", "warn_alloc", "warn_bogus", "__warn", "alloc_page", "k?v?(?:m|z|c)alloc",
    "krealloc", "kmem_cache", "allocate_slab", "__alloc_frozen_pages_noprof",
    "folio_(?:alloc|unlock)", "filemap_alloc_folio", "__filemap_get_folio",
    "find_or_create_page", "do_read_cache_folio", "read_cache_page", "pagecache_get_page",
    "grab_cache_page_write_begin", "slab_", "debug_object", "timer_is_static_object",
    "work_is_static_object", "__might_fault", "print_unlock", "imbalance_bug", "lockdep",
    "bh_enable", "bh_disable", "perf_trace", "lock_acquire", "lock_release", "lock_class",
    "mark_lock", "(reacquire|mark)_held_locks", "raw_spin_rq", "spin_lock", "spin_trylock",
    "spin_unlock", "read_lock", "read_trylock", "write_lock", "write_trylock", "read_unlock",
    "write_unlock", "^down$", "down_read", "down_write", "down_read_trylock",
    "down_write_trylock", "down_trylock", "up_read", "up_write", "^mutex_", "^__mutex_",
    "^rt_mutex_", "owner_on_cpu", "osq_lock", "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit", "__wake_up", "^refcount_", "^kref_", "ref_tracker",
    "seqprop_assert", "memcpy", "memcmp", "memset", "memchr", "memmove", "memdup", "strcmp",
    "strncmp", "strcpy", "strlcpy", "strncpy", "strscpy", "strlen", "strstr", "strnstr",
    "strnlen", "strchr", "strdup", "strndup", "copy_to_user", "copy_from_user",
    "copy_to_iter", "copy_from_iter", "copy_page_to_iter", "copy_page_from_iter",
    "copy_folio_to_iter", "^copyin$", "^copyout$", "put_user", "get_user", "might_fault",
    "might_sleep", "list_add", "list_del", "list_replace", "list_move", "list_splice",
    "^rb_", "^__rb_", "_indirect_thunk_", "string", "pointer", "snprintf", "scnprintf",
    "kasprintf", "kvasprintf", "printk", "va_format", "dev_info", "dev_notice", "dev_warn",
    "dev_err", "dev_alert", "dev_crit", "dev_emerg", "program_check_exception",
    "program_check_common", "del_timer", "flush_work", "__cancel_work_timer",
    "cancel_work_sync", "try_to_grab_pending", "flush_workqueue", "drain_workqueue",
    "destroy_workqueue", "queue_work", "finish_wait", "kthread_stop", "kobject_",
    "add_uevent_var", "get_device_parent", "device_add", "device_del", "device_unregister",
    "device_destroy", "device_release", "devres_release_all", "hwrng_unregister",
    "i2c_del_adapter", "__unregister_client", "device_for_each_child", "rollback_registered",
    "unregister_netdev", "sysfs_remove", "device_remove_file", "tty_unregister_device",
    "dummy_urb_enqueue", "usb_kill_urb", "usb_kill_anchored_urbs", "usb_control_msg",
    "usb_hcd_submit_urb", "usb_submit_urb", "^complete$", "wait_for_completion",
    "^kv?free$", "kfree_skb", "readb$", "readw$", "readl$", "readq$", "writeb$", "writew$",
    "writel$", "writeq$", "logic_in", "logic_out", r"^crc\d+", "crc_itu_t",
    "__might_resched", "assertfail", "^iput$", "^iput_final$", "^ihold$",
    "hex_dump_to_buffer", "print_hex_dump", "^klist_", "(trace|lockdep)_(hard|soft)irq",
    "^(un)?lock_page", "stack_trace_consume_entry", "arch_stack_walk", "stack_trace_save",
    "insert_work", "__queue_delayed_work", "queue_delayed_work_on", "ida_free",
    "do_(kernel|translation)_fault", "do_mem_abort", "el1_abort", "el1h_64_sync(?:_handler)?",
    "print_tainted", "xas_(?:start|load|find)", "find_lock_entries",
    "truncate_inode_pages_range", "__phys_addr", "__fortify_report", "cleanup_srcu_struct",
    "rhashtable_lookup", "extract_(user|iter)_to_sg", "drop_nlink", "^get_taint$",
    "^put_device$", "lock_timer_base", "__timer_delete_sync", "sk_stop_timer_sync",
    "__mod_timer", "fast_dput", "dput",
    # Buffer-head helpers WARN about their caller's misuse (a buffer not uptodate), like
    # refcount_ and kobject_ helpers do: the caller is the bug.
    "^mark_buffer_dirty",
)

#: Fault-injection stacks interleave with real reports; seeing one makes the title suspect.
CORRUPTED_LINES: tuple[re.Pattern[str], ...] = (
    compile_rule(r"^( \[\<?(?:0x)?[0-9a-f]+\>?\])? should_fail(slab)?(\.[a-z0-9.]+)?\+0x"),
)

#: Syscall wrappers differ per architecture and kernel version; the bare name groups them.
STRIP_FRAME_PREFIXES: tuple[str, ...] = (
    "SYSC_", "SyS_", "sys_", "__x64_", "__ia32_", "__arm64_", "____sys_", "___sys_", "__sys_",
    "__se_", "__se_sys_", "__do_sys_", "compat_SYSC_", "compat_SyS_", "ksys_",
)

#: Entry points of work dispatch: a stall is named after the frame just above the first one.
STALL_ANCHOR_FRAMES: tuple[re.Pattern[str], ...] = tuple(
    compile_rule(p)
    for p in (
        "process_one_work", "do_syscall_", "do_fast_syscall_", "sysenter_dispatch",
        "tracesys_phase2", "el0_svc_handler", "invoke_syscall", "ret_fast_syscall",
        "netif_receive_skb", "do_softirq", "call_timer_fn", "_run_timers", "run_timer_softirq",
        "hrtimer_run", "run_ksoftirqd", "smpboot_thread_fn", "^kthread$", "start_secondary",
        "cpu_startup_entry", "ret_from_fork", "vfs_write", "vfs_read", "vfs_iter_read",
        "vfs_iter_write", "do_iter_read", "do_iter_write", "call_read_iter", "call_write_iter",
        "new_sync_read", "new_sync_write", "vfs_ioctl", "ksys_ioctl", "compat_ioctl",
        "compat_sys_ioctl", "blkdev_driver_ioctl", "blkdev_ioctl", "^call_read_iter",
        "^call_write_iter", "do_iter_readv_writev", "^call_mmap", "mmap_region", "do_mmap",
        "do_dentry_open", "vfs_open", "^sock_sendmsg", "^sock_recvmsg", "^sock_release",
        "^__sock_release", "^setsockopt$", "kernel_setsockopt", "sock_common_setsockopt",
        "^listen$", "kernel_listen", "sk_common_release", "^sock_mmap", "^accept$",
        "kernel_accept", "^sock_do_ioctl", "^sock_ioctl", "^compat_sock_ioctl",
        "^nfnetlink_rcv_msg", "^rtnetlink_rcv_msg", "^netlink_dump",
        "^(sys_)?(socketpair|connect|ioctl)", "__do_fault", "do_page_fault", "^page_fault$",
        "__fput", "task_work_run", "exit_to_usermode", "smp_call_function", "tasklet_action",
        "tasklet_hi_action",
    )
)


def stall_frame(frames: list[str]) -> tuple[str, int]:
    """Name a stall after the function just above the first dispatch entry point.

    The top of a stalled stack is wherever the loop happened to be when sampled, so it
    differs between occurrences of the same bug; the caller of the entry point does not.
    """
    if not frames:
        return "", -1
    prev, prev_idx = frames[0], 0
    for i, frame in enumerate(frames):
        if any(a.search(frame) for a in STALL_ANCHOR_FRAMES):
            if "smp_call_function" in frame:
                return "smp_call_function", i
            return prev, prev_idx
        prev, prev_idx = frame, i
    return "", -1


_HANG_ANCHORS = (
    ("rtnl_lock", ""),
    ("synchronize_rcu", "synchronize_rcu"),
    ("synchronize_srcu", "synchronize_rcu"),
    ("synchronize_net", "synchronize_rcu"),
    ("synchronize_sched", "synchronize_rcu"),
)
_HANG_SKIP = (
    "sched", "_lock", "_slowlock", "down", "rwsem", "completion", "kthread", "wait",
    "synchronize", "context_switch", "__switch_to", "cancel_delayed_work", "rcu_barrier",
)


def hung_task_frame(frames: list[str]) -> tuple[str, int]:
    """Name a hung task after what it waits in, grouping the RCU and RTNL waiters.

    A hung task is a victim: the sleeping frames are the same for every waiter, so they are
    skipped and the first frame that is not waiting machinery names the bucket.
    """
    for i, frame in enumerate(frames):
        for anchor, replacement in _HANG_ANCHORS:
            if anchor in frame:
                return (replacement or frame), i
    for i, frame in enumerate(frames):
        if not any(s in frame for s in _HANG_SKIP):
            return frame, i
    return "", -1


def warning_stack(*skip: str) -> StackFmt:
    """WARNINGs trap: the stack starts at the RIP line (x86) or "--- interrupt:" (ppc)."""
    return StackFmt(
        parts=(
            compile_rule("(?:" + RIP_FRAME.pattern + r"|--- interrupt: [0-9]+ at {{FUNC}})"),
            PARSE_STACK,
        ),
        parts2=(CALL_TRACE, PARSE_STACK),
        skip=skip,
    )


def call_trace_stack(*skip: str, extractor: Extractor | None = None) -> StackFmt:
    return StackFmt(parts=(CALL_TRACE, PARSE_STACK), skip=skip, extractor=extractor)


def rip_stack(*skip: str, extractor: Extractor | None = None) -> StackFmt:
    return StackFmt(parts=(RIP_FRAME, CALL_TRACE, PARSE_STACK), skip=skip, extractor=extractor)
