"""The catalogue of Linux crash headers and their title rules.

Order matters twice, as in syzkaller: the first header found on a line starts the report,
and within one header the rule whose title matches earliest in the report wins (ties go to
the rule listed first). Titles use Go-style ``%[N]v`` slots: the title/report regex groups
first, then one guilty frame per stack trace parsed. Rules syzkaller lacks (hard lockups,
RT throttling, Oops fallbacks) come last so they never shadow a reference rule.
"""

from __future__ import annotations

from reprolab.detect.rules import (
    CALL_TRACE,
    PARSE_STACK,
    RIP_FRAME,
    Oops,
    OopsFormat,
    StackFmt,
    call_trace_stack,
    hung_task_frame,
    rip_stack,
    stall_frame,
    warning_stack,
)
from reprolab.detect.rules import compile_rule as c

_F = OopsFormat
_KMSAN_ORIGIN = c("(^(?:(?!Local variable ).)*Local variable .* created at:"
                  "|Uninit was created at:)")
_LOCKDEP_AT = r"(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"

#: The shapes of the kernel's own WARNING:/INFO:/BUG: lines (see :attr:`Oops.shapes`). Each
#: is matched once, where the header starts, so it costs one pass over the line.
_SRC = r"[a-zA-Z0-9\-_/.]+\.[a-zA-Z]+:[0-9]+"
_WARNING_SHAPES = tuple(c(p) for p in (
    r"WARNING: CPU: [0-9]+ PID: [0-9]+ at ",          # 3.x and later
    r"WARNING: at " + _SRC,                            # 2.6/3.x: "WARNING: at FILE:LINE func()"
    r"WARNING: (?:\[[^\]]*+\] )?" + _SRC + r" at ",   # syzkaller's other kernels
    r"WARNING: [^\n]*? at " + _SRC + r" ",
    r"WARNING: (?:possible (?:circular locking|recursive locking|irq lock inversion)"
    r"|inconsistent lock state|suspicious RCU usage|bad unlock balance|held lock freed"
    r"|Nested lock was not taken|lock held when returning|kernel stack (?:regs|frame pointer)"
    r"|[A-Z]++-safe -> |[^\n]*?still has locks held!)",
    r"WARNING:\s*$",
))
_INFO_SHAPES = tuple(c(p) for p in (
    r"INFO: (?:possible (?:circular locking|recursive locking|irq lock inversion)"
    r"|inconsistent lock state|SOFTIRQ-safe -> |trying to register non-static key"
    r"|suspicious RCU usage|(?:Freed|Allocated) in )",
    r"INFO: rcu_[a-z_]++ (?:self-)?detected",
    r"INFO: task [^\n]*? (?:blocked (?:in I/O wait )?for more than|can't die for more than)",
    r"INFO: \S++ (?:self-)?detected stalls? on",
    r"INFO:\s*$",
))
_BUG_SHAPES = tuple(c(p) for p in (
    r"BUG: (?:KASAN|KMSAN|KCSAN|KFENCE|soft lockup|workqueue|spinlock|rwlock|scheduling while"
    r"|sleeping function|using |unable to handle|Unable to handle|kernel NULL|Kernel NULL"
    r"|Bad page|Bad rss|non-zero |Dentry |lock held when|bad unlock balance|held lock freed"
    r"|memory leak|Invalid wait context|stack guard page|[^\n]*?still has locks held!"
    r"|[^\n]*?stack guard page was hit)",
    r"BUG: [a-zA-Z0-9_-]++ \(",                        # slab: "BUG: kmalloc-64 (Tainted: G"
    r"BUG: [^\n]*?(?:!|too low|corrupted|detected)",  # "BUG: MAX_LOCK_DEPTH too low!", ...
    r"BUG:\s*$",
))

_BUG = Oops(
    "BUG:",
    (
        _F(c("BUG: KASAN:"),
           "KASAN: %[1]v %[3]v in %[4]v",
           report=c(r"BUG: KASAN: ([a-z\-]+) in {{FUNC}}(?:.*\n)+?.*(Read|Write) "
                    r"(?:of size|at addr) (?:[0-9a-f]+)"),
           alt=("bad-access in %[4]v",),
           stack=StackFmt((c(r"BUG: KASAN: (?:[a-z\-]+) in {{FUNC}}"), CALL_TRACE, PARSE_STACK),
                          skip=("kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"))),
        _F(c("BUG: KASAN:"),
           "KASAN: invalid-free in %[2]v",
           report=c("BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in "
                    "{{FUNC}}"),
           alt=("invalid-free in %[2]v",),
           stack=StackFmt((c("BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free)"
                             " in {{FUNC}}"), CALL_TRACE, PARSE_STACK),
                          skip=("slab_", "kfree", "vunmap", "vfree"))),
        _F(c(r"BUG: KASAN: ([a-z\-]+) on address(?:.*\n)+?.*(Read|Write) of size ([0-9]+)"),
           "KASAN: %[1]v %[2]v"),
        _F(c("BUG: KASAN: (.*)"), "KASAN: %[1]v", corrupted=True),
        _F(c("BUG: KMSAN: kernel-usb-infoleak"),
           "KMSAN: kernel-usb-infoleak in %[2]v",
           report=c("BUG: KMSAN: kernel-usb-infoleak in {{FUNC}}"),
           alt=("KMSAN origin in %[3]v",),
           stack=StackFmt((PARSE_STACK, _KMSAN_ORIGIN,
                           PARSE_STACK),
                          skip=("alloc_skb", "usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg",
                                "usb_interrupt_msg", "usb_control_msg")),
           no_stack_trace=True),
        _F(c("BUG: KMSAN:"),
           "KMSAN: %[1]v in %[3]v",
           report=c(r"BUG: KMSAN: ([a-z\-]+) in {{FUNC}}"),
           alt=("bad-access in %[3]v",),
           stack=StackFmt((PARSE_STACK, _KMSAN_ORIGIN,
                           PARSE_STACK),
                          skip=("alloc_skb", "netlink_ack", "netlink_rcv_skb", "_encrypt$",
                                "^(?:crypto|cipher|drbg|rng)_")),
           no_stack_trace=True),
        _F(c("BUG: KCSAN: data-race"), "KCSAN: %[1]v", report=c("BUG: KCSAN: (.*)"),
           no_stack_trace=True),
        _F(c("BUG: KCSAN:"), "KCSAN: %[1]v", report=c("BUG: KCSAN: (.*)"), no_stack_trace=True),
        _F(c("BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}"),
           "KFENCE: %[1]v %[2]v in %[4]v", alt=("bad-access in %[4]v",),
           stack=StackFmt((c(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE_STACK))),
        _F(c("BUG: KFENCE: invalid free in {{FUNC}}"),
           "KFENCE: invalid free in %[2]v", alt=("invalid-free in %[2]v",), no_stack_trace=True,
           stack=StackFmt((c(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE_STACK))),
        _F(c("BUG: KFENCE: invalid (read|write) in {{FUNC}}"),
           "KFENCE: invalid %[1]v in %[3]v", alt=("bad-access in %[3]v",),
           stack=StackFmt((c(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE_STACK))),
        _F(c("BUG: KFENCE: memory corruption in {{FUNC}}"),
           "KFENCE: memory corruption in %[2]v", no_stack_trace=True,
           stack=StackFmt((c(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE_STACK))),
        _F(c("BUG: (?:unable to handle kernel paging request|unable to handle page fault for "
             "address|Unable to handle kernel data access)"),
           "BUG: unable to handle kernel paging request in %[1]v",
           alt=("bad-access in %[1]v",), stack=rip_stack()),
        _F(c("BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer "
             "dereference|Kernel NULL pointer dereference)"),
           "BUG: unable to handle kernel NULL pointer dereference in %[1]v",
           alt=("bad-access in %[1]v",), stack=rip_stack()),
        _F(c("BUG: (?:unable to handle kernel|Unable to handle kernel)"),
           "BUG: unable to handle kernel", corrupted=True),
        _F(c("BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion"
             "|bad magic|wrong owner|wrong CPU|trylock failure on UP)"),
           "BUG: %[1]v %[2]v in %[3]v",
           stack=call_trace_stack("spin_", "_lock", "_unlock")),
        _F(c("BUG: soft lockup"), "BUG: soft lockup in %[1]v", alt=("stall in %[1]v",),
           stack=rip_stack(extractor=stall_frame)),
        _F(c("BUG: .*still has locks held!"), "BUG: still has locks held in %[1]v",
           report=c(r"BUG: .*still has locks held!(?:.*\n)+?.*{{PC}} +{{FUNC}}")),
        _F(c("BUG: scheduling while atomic"), "BUG: scheduling while atomic in %[1]v",
           stack=call_trace_stack("schedule")),
        _F(c("BUG: lock held when returning to user space"),
           "BUG: lock held when returning to user space in %[1]v",
           report=c(r"BUG: lock held when returning to user space(?:.*\n)+?.*leaving the kernel "
                    r"with locks still held" + _LOCKDEP_AT),
           no_stack_trace=True),
        _F(c("BUG: bad unlock balance detected!"), "BUG: bad unlock balance in %[1]v",
           stack=StackFmt((c("{{PC}} +{{FUNC}}"), CALL_TRACE, PARSE_STACK))),
        _F(c("BUG: held lock freed!"), "BUG: held lock freed in %[1]v",
           report=c(r"BUG: held lock freed!(?:.*\n)+?.*{{PC}} +{{FUNC}}")),
        _F(c("BUG: Bad rss-counter state"), "BUG: Bad rss-counter state", no_stack_trace=True),
        _F(c("BUG: non-zero nr_ptes on freeing mm"), "BUG: non-zero nr_ptes on freeing mm",
           no_stack_trace=True),
        _F(c("BUG: non-zero nr_pmds on freeing mm"), "BUG: non-zero nr_pmds on freeing mm",
           no_stack_trace=True),
        _F(c("BUG: Dentry .* still in use"), "BUG: Dentry still in use in %[1]v",
           report=c(r"BUG: Dentry .* still in use \([0-9]+\) \[(unmount) of ([^\]]+)\]"),
           alt=("BUG: Dentry still in use [%[1]v of %[2]v]",)),
        _F(c("BUG: Bad page (state|cache)"), "BUG: Bad page %[1]v in %[2]v",
           stack=StackFmt((c("page last allocated"), PARSE_STACK),
                          skip=("(free|put|get|update|release)_page", "free_unref", "^_*folio",
                                "truncate_inode_pages", "page_frag_free", "alloc", "vmap",
                                "page_owner"))),
        _F(c("BUG: Bad page map"), "BUG: Bad page map"),
        _F(c("BUG: workqueue lockup"), "BUG: workqueue lockup", no_stack_trace=True),
        _F(c("BUG: sleeping function called from invalid context at (.*)"),
           "BUG: sleeping function called from invalid context in %[2]v",
           stack=call_trace_stack()),
        _F(c(r"BUG: using ([a-z_]+)\(\) in preemptible"),
           "BUG: using %[1]v() in preemptible code in %[2]v",
           stack=call_trace_stack("dump_stack", "preemption", "preempt", "debug_",
                                  "processor_id", "this_cpu")),
        _F(c("BUG: workqueue leaked lock or atomic"),
           "BUG: workqueue leaked lock or atomic in %[1]v",
           report=c(r"BUG: workqueue leaked lock or atomic(?:.*\n)+?.*last function: "
                    r"([a-zA-Z0-9_]+)\n"),
           no_stack_trace=True),
        _F(c("BUG: memory leak"), "memory leak in %[1]v",
           stack=StackFmt((c(r"backtrace(?: \(crc [0-9A-Fa-f]*\))?:"), PARSE_STACK),
                          skip=("kmemleak", "mmap", "kmem", "slab", "alloc", "create_object",
                                "idr_get", "list_lru_init", "kasprintf", "kvasprintf",
                                "pcpu_create", "strdup", "strndup", "memdup"))),
        _F(c("BUG: .*stack guard page was hit at"), "BUG: stack guard page was hit in %[1]v",
           alt=("stack-overflow in %[1]v",), stack=rip_stack(extractor=stall_frame)),
        _F(c("BUG: Invalid wait context"), "WARNING: locking bug in %[1]v",
           stack=call_trace_stack("lock_sock", "release_sock")),
        _F(c(r"BUG:\s*(?:\n|$)"), "BUG: corrupted", corrupted=True),
    ),
    (c("ODEBUG:"), c("Boot_DEBUG:"), c("xlog_status:"), c("DEBUG:"),
     c("BUG: no syscalls can create resource")),
    _BUG_SHAPES,
)

_WARNING = Oops(
    "WARNING:",
    (
        _F(c(r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)"),
           "WARNING: ODEBUG bug in %[1]v",
           stack=warning_stack("debug_", "rcu", "hrtimer_", "timer_", "work_", "percpu_",
                               "vunmap", "vfree", "__free_", "debug_check", "kobject_")),
        _F(c(r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)"),
           "WARNING: bad usercopy in %[1]v", stack=warning_stack("usercopy", "__check")),
        _F(c(r"WARNING: .*lib/kobject\.c.* (?:kobject_|at)"),
           "WARNING: kobject bug in %[1]v", stack=warning_stack("kobject_")),
        _F(c(r"WARNING: .*fs/proc/generic\.c.* (?:proc_register|at)"),
           "WARNING: proc registration bug in %[1]v", stack=warning_stack("proc_")),
        _F(c(r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)"),
           "WARNING: refcount bug in %[1]v", stack=warning_stack("refcount", "kobject_")),
        _F(c(r"WARNING: .*kernel/locking/lockdep\.c.*lock_"),
           "WARNING: locking bug in %[1]v", stack=warning_stack("lock_sock", "release_sock")),
        _F(c("WARNING: .*still has locks held!"), "WARNING: still has locks held in %[1]v",
           report=c(r"WARNING: .*still has locks held!(?:.*\n)+?.*at: {{FUNC}}")),
        _F(c("WARNING: Nested lock was not taken"), "WARNING: nested lock was not taken in %[1]v",
           stack=warning_stack()),
        _F(c("WARNING: lock held when returning to user space"),
           "WARNING: lock held when returning to user space in %[1]v",
           report=c(r"WARNING: lock held when returning to user space(?:.*\n)+?.*leaving the "
                    r"kernel with locks still held" + _LOCKDEP_AT),
           no_stack_trace=True),
        _F(c(r"WARNING: .*mm/.*\.c.* k?.?malloc"), "WARNING: kmalloc bug in %[1]v",
           stack=warning_stack("kmalloc", "krealloc", "slab", "kmem")),
        _F(c(r"WARNING: .*mm/vmalloc.c.*__vmalloc_node"), "WARNING: zero-size vmalloc in %[1]v",
           stack=warning_stack()),
        _F(c("WARNING: .* usb_submit_urb"), "WARNING in %[1]v/usb_submit_urb",
           stack=warning_stack("usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg",
                               "usb_interrupt_msg", "usb_control_msg")),
        _F(c(r"WARNING: {{SRC}} at 0x\d+, CPU#\d+"), "WARNING in %[2]v", stack=warning_stack()),
        _F(c("WARNING: .* at {{SRC}} {{FUNC}}"), "WARNING in %[3]v", stack=warning_stack()),
        _F(c("WARNING: {{SRC}} at {{FUNC}}"), "WARNING in %[3]v", stack=warning_stack()),
        _F(c(r"WARNING: \[.*\] {{SRC}} at {{FUNC}}.*"), "WARNING in %[3]v", stack=warning_stack()),
        # 2.6/3.x: "WARNING: at kernel/watchdog.c:393 watchdog_overflow_callback+0xd0/0xe0()".
        _F(c("WARNING: at {{SRC}} {{FUNC}}"), "WARNING in %[3]v", stack=warning_stack()),
        _F(c("WARNING: possible circular locking dependency detected"),
           "possible deadlock in %[1]v",
           report=c(r"WARNING: possible circular locking dependency detected(?:.*\n)+?.*is trying "
                    r"to acquire lock"),
           stack=StackFmt((c("at: (?:{{PC}} +)?{{FUNC}}"), c("at: (?:{{PC}} +)?{{FUNC}}"),
                           PARSE_STACK),
                          skip=("process_one_work", "flush_workqueue", "drain_workqueue",
                                "destroy_workqueue"))),
        _F(c("WARNING: possible irq lock inversion dependency detected"),
           "possible deadlock in %[1]v",
           report=c(r"WARNING: possible irq lock inversion dependency detected(?:.*\n)+?.*just "
                    r"changed the state of lock" + _LOCKDEP_AT)),
        _F(c("WARNING: .*-safe -> .*-unsafe lock order detected"), "possible deadlock in %[1]v",
           stack=StackFmt((c("^(?:(?!which became ).)*which became (?:.*) at:"), PARSE_STACK))),
        _F(c("WARNING: possible recursive locking detected"), "possible deadlock in %[1]v",
           report=c(r"WARNING: possible recursive locking detected(?:.*\n)+?.*is trying to "
                    r"acquire lock" + _LOCKDEP_AT)),
        _F(c("WARNING: inconsistent lock state"), "inconsistent lock state in %[2]v",
           report=c(r"WARNING: inconsistent lock state(?:.*\n)+?.*takes" + _LOCKDEP_AT),
           stack=call_trace_stack()),
        _F(c("WARNING: suspicious RCU usage"), "WARNING: suspicious RCU usage in %[2]v",
           report=c(r"WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}"),
           stack=call_trace_stack("rcu", "kmem", "slab")),
        _F(c("WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value"),
           "WARNING: kernel stack regs has bad '%[1]v' value", no_stack_trace=True),
        _F(c("WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value"),
           "WARNING: kernel stack frame pointer has bad value", no_stack_trace=True),
        _F(c("WARNING: bad unlock balance detected!"), "WARNING: bad unlock balance in %[1]v",
           stack=StackFmt((c("{{PC}} +{{FUNC}}"), CALL_TRACE, PARSE_STACK))),
        _F(c("WARNING: held lock freed!"), "WARNING: held lock freed in %[1]v",
           report=c(r"WARNING: held lock freed!(?:.*\n)+?.*at:(?: {{PC}})? +{{FUNC}}")),
        _F(c("WARNING: kernel stack regs .* has bad 'bp' value"),
           "WARNING: kernel stack regs has bad value", no_stack_trace=True),
        _F(c("WARNING: kernel stack frame pointer .* has bad value"),
           "WARNING: kernel stack regs has bad value", no_stack_trace=True),
        _F(c(r"WARNING:\s*(?:\n|$)"), "WARNING: corrupted", corrupted=True),
    ),
    (c("WARNING: /etc/ssh/moduli does not exist, using fixed modulus"),
     c("WARNING: workqueue cpumask: online intersect > possible intersect"),
     c("WARNING: [Tt]he mand mount option"),
     c(r"WARNING: Unsupported flag value\(s\) of 0x%x in DT_FLAGS_1"),
     c("WARNING: Unprivileged eBPF is enabled with eIBRS"),
     c(r"WARNING: fbcon: Driver '([^']*+)' missed to adjust virtual screen size"),
     c("WARNING: See https[^ ]* for mitigation options."),
     c("WARNING: kernel not compiled with CPU_SRSO"),
     c(r"EXT4-[Ff][Ss](?: \([^)]*+\))?:"),
     c(r"(?i)^(?:(?!warning: ).)*warning: .* uses "
       r"(deprecated v2 capabilities|wireless extensions)"),
     c(r"XFS \(\w+\): WARNING")),
    _WARNING_SHAPES,
)

_INFO_LOCKDEP = (
    ("possible circular locking dependency detected", "is trying to acquire lock",
     "possible deadlock in %[1]v"),
    ("possible irq lock inversion dependency detected", "just changed the state of lock",
     "possible deadlock in %[1]v"),
    ("SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", "is trying to acquire",
     "possible deadlock in %[1]v"),
    ("possible recursive locking detected", "is trying to acquire lock",
     "possible deadlock in %[1]v"),
    ("inconsistent lock state", "takes", "inconsistent lock state in %[1]v"),
)

_INFO = Oops(
    "INFO:",
    (
        *(_F(c("INFO: " + head), fmt,
             report=c(r"INFO: " + head + r" \](?:.*\n)+?.*" + mid
                      + r"(?:.*\n)+?.*at: {{PC}} +{{FUNC}}"))
          for head, mid, fmt in _INFO_LOCKDEP),
        _F(c("INFO: rcu_(?:preempt|sched|bh|tasks(?:_trace|_rude)?) self-detected"
             "(?: expedited)? stall"),
           "INFO: rcu detected stall in %[1]v", alt=("stall in %[1]v",),
           stack=StackFmt((c("apic_timer_interrupt"), RIP_FRAME, PARSE_STACK),
                          parts2=(c("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"),
                                  PARSE_STACK),
                          skip=("apic_timer_interrupt", "rcu"), extractor=stall_frame,
                          # 6.x self-detected stalls show the interrupted registers only
                          # (dump_cpu_task -> show_regs): RIP line, then the task's stack.
                          parts3=(RIP_FRAME, CALL_TRACE, PARSE_STACK))),
        _F(c("INFO: rcu_(?:preempt|sched|bh|tasks(?:_trace|_rude)?) (?:self-)?detected"
             "(?: expedited)? stall"),
           "INFO: rcu detected stall in %[1]v", alt=("stall in %[1]v",),
           stack=StackFmt((c("apic_timer_interrupt"), RIP_FRAME, PARSE_STACK),
                          parts2=(c("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"),
                                  PARSE_STACK),
                          skip=("apic_timer_interrupt", "rcu"), extractor=stall_frame)),
        _F(c("INFO: trying to register non-static key"),
           "INFO: trying to register non-static key in %[1]v",
           stack=call_trace_stack("stack", "lock", "IRQ")),
        _F(c("INFO: suspicious RCU usage"), "INFO: suspicious RCU usage in %[2]v",
           report=c(r"INFO: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}"),
           stack=call_trace_stack("rcu", "kmem", "slab")),
        _F(c("INFO: task .* blocked (?:in I/O wait )?for more than [0-9]+ seconds"),
           "INFO: task hung in %[1]v",
           alt=("hang in %[1]v",), stack=call_trace_stack(extractor=hung_task_frame)),
        _F(c("INFO: task .* can't die for more than .* seconds"), "INFO: task can't die in %[1]v",
           alt=("hang in %[1]v",), stack=call_trace_stack("schedule")),
        _F(c("INFO: (Freed|Allocated) in (.*)"), "INFO: %[1]v in %[2]v", corrupted=True),
        _F(c(r"INFO:\s*(?:\n|$)"), "INFO: corrupted", corrupted=True),
    ),
    (c("INFO: lockdep is turned off"), c("INFO: Stall ended before state dump start"),
     c("INFO: NMI handler"), c("INFO: recovery required on readonly filesystem"),
     c("^(?:(?!handler|interrupt).)*(?:handler|interrupt).*took too long"),
     c("INFO: sys_[^ ]* is not present in /proc/kallsyms"),
     c("INFO: no syscalls can create resource"), c("rmt_storage:INFO:"), c("_INFO:")),
    _INFO_SHAPES,
)


def _simple(header: str, title: str, fmt: str, *, alt: tuple[str, ...] = (),
            stack: StackFmt | None = None, no_stack_trace: bool = False,
            suppress: tuple[str, ...] = ()) -> Oops:
    return Oops(header, (_F(c(title), fmt, alt=alt, stack=stack,
                            no_stack_trace=no_stack_trace),),
                tuple(c(s) for s in suppress))


_PANIC = Oops(
    "Kernel panic",
    (
        _F(c("Kernel panic - not syncing: stack-protector:"),
           "kernel panic: stack is corrupted in %[1]v",
           report=c("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: "
                    "{{FUNC}}"),
           no_stack_trace=True),
        _F(c("Kernel panic - not syncing: stack-protector:"),
           "kernel panic: stack is corrupted in %[1]v",
           report=c("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: "
                    "[a-f0-9]+"),
           stack=call_trace_stack("stack_chk")),
        _F(c("Kernel panic - not syncing: corrupted stack end"),
           "kernel panic: corrupted stack end in %[1]v",
           report=c("Kernel panic - not syncing: corrupted stack end detected inside scheduler"),
           alt=("stack-overflow in %[1]v",),
           stack=call_trace_stack("schedule", "retint_kernel", extractor=stall_frame)),
        _F(c("Kernel panic - not syncing: kernel stack overflow"), "kernel stack overflow in %[1]v",
           alt=("stack-overflow in %[1]v",),
           stack=call_trace_stack("bad_stack", extractor=stall_frame)),
        _F(c("Kernel panic - not syncing: Attempted to kill init!"),
           "kernel panic: Attempted to kill init!"),
        _F(c("Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+"),
           "kernel panic: Couldn't open N_TTY ldisc"),
        _F(c("Kernel panic - not syncing: Fatal exception"), "kernel panic: Fatal exception",
           corrupted=True),
        _F(c("Kernel panic - not syncing: panic_on_warn set"), "kernel panic: panic_on_warn set",
           corrupted=True),
        _F(c("Kernel panic - not syncing: hung_task: blocked tasks"),
           "kernel panic: hung_task: blocked tasks", corrupted=True),
        _F(c("Kernel panic - not syncing: (.*)"), "kernel panic: %[1]v"),
    ),
)

_KERNEL_BUG = Oops(
    "kernel BUG",
    (
        _F(c("kernel BUG at mm/usercopy.c"), "BUG: bad usercopy in %[1]v",
           stack=call_trace_stack("usercopy", "__check")),
        _F(c("kernel BUG at lib/list_debug.c"), "BUG: corrupted list in %[1]v",
           alt=("bad-access in %[1]v",), stack=call_trace_stack()),
        _F(c("kernel BUG at (.*)"), "kernel BUG in %[2]v", stack=rip_stack("^skb_")),
    ),
)

_UBSAN = Oops(
    "UBSAN:",
    (
        _F(c("UBSAN:"), "UBSAN: undefined-behaviour in %[1]v",
           report=c("UBSAN: Undefined behaviour in"), stack=call_trace_stack("ubsan", "overflow")),
        _F(c("UBSAN: array-index-out-of-bounds in"), "UBSAN: array-index-out-of-bounds in %[1]v",
           alt=("bad-access in %[1]v",), stack=call_trace_stack("ubsan", "overflow")),
        _F(c("UBSAN:"), "UBSAN: %[1]v in %[2]v", report=c("UBSAN: (.*?) in"),
           stack=call_trace_stack("ubsan", "overflow")),
    ),
)

_TRUSTY = Oops(
    "trusty: panic",
    (
        _F(c("trusty: panic.* ASSERT FAILED"), "trusty: ASSERT FAILED: %[1]v",
           report=c(r"trusty: panic \(.*?\):(?: DEBUG)? ASSERT FAILED at \(.*?\): (.+)"),
           no_stack_trace=True),
        _F(c("trusty: panic.* ASSERT FAILED.*: *(.*)"), "trusty: ASSERT FAILED: %[1]v",
           corrupted=True),
        _F(c("trusty: panic"), "trusty: panic: %[1]v", report=c(r"trusty: panic \(.*?\): (.+)"),
           no_stack_trace=True),
    ),
)

_RUST = Oops(
    "rust_kernel: panicked",
    (_F(c("rust_kernel: panicked"), "%[1]v in %[2]v",
        report=c(r"rust_kernel: panicked at [^\n]*?\n(.+?)\n"),
        stack=call_trace_stack(r"__rustc::rust_begin_unwind")),),
)

#: Go runtime crashes (syzkaller's own tools, gVisor); kept so titles match the reference.
_GO_RUNTIME = Oops("fatal error:",
                   (_F(c("fatal error:"), "go runtime error", no_stack_trace=True),),
                   (c("ALSA"), c("fatal error: cannot create timer")))

#: syzkaller's own executor failures and Go panics (harmless here, kept for fidelity).
_COMMON = (
    _simple("SYZFAIL:", "SYZFAIL:(.*)", "SYZFAIL:%[1]v", no_stack_trace=True),
    Oops("SYZFATAL:", (_F(c("SYZFATAL:(.*)()"), "SYZFATAL:%[1]v", alt=("SYZFATAL%[2]v",),
                          no_stack_trace=True),)),
    Oops("panic:", (_F(c("panic: Sentry detected .* stuck task"),
                       "panic: Sentry detected stuck tasks", no_stack_trace=True),
                    _F(c("panic:(.*)"), "panic:%[1]v", no_stack_trace=True)),
         (c("_panic:"), c("xlog_status:"), c(r"ddb\.onpanic:"), c("evtlog_status:"))),
)

#: Rules syzkaller does not have, for detectors this project relies on. Same title style.
#: The watchdog's own NMI/perf path sits on top of a hard-lockup stack in older kernels.
_NMI_PLUMBING = ("nmi", "perf_event", "_pmu_", "watchdog", "warn_slowpath", "^__warn",
                 "dump_stack", "show_regs")
HARD_LOCKUP = Oops(
    "Watchdog detected hard LOCKUP",
    (_F(c("Watchdog detected hard LOCKUP"), "BUG: hard lockup in %[1]v", alt=("stall in %[1]v",),
        stack=StackFmt((RIP_FRAME, CALL_TRACE, PARSE_STACK), parts2=(CALL_TRACE, PARSE_STACK),
                       skip=_NMI_PLUMBING),
        # NMI backtraces often unwind to "?" frames only; the RIP line is what names the
        # lockup, and a missing one already marks the report corrupted.
        no_stack_trace=True),),
)
#: powerpc's own watchdog (arch/powerpc/kernel/watchdog.c): "Watchdog CPU:80 detected Hard
#: LOCKUP other CPUS:1,3-8" from the CPU that noticed, "Watchdog CPU:1 Hard LOCKUP" from the
#: stuck one, with its NIP and stack.
PPC_HARD_LOCKUP = Oops(
    "Watchdog CPU:",
    (_F(c("Watchdog CPU:[0-9]+ Hard LOCKUP"), "BUG: hard lockup in %[1]v",
        alt=("stall in %[1]v",),
        stack=StackFmt((RIP_FRAME, CALL_TRACE, PARSE_STACK), parts2=(CALL_TRACE, PARSE_STACK),
                       skip=_NMI_PLUMBING),
        no_stack_trace=True),
     _F(c("Watchdog CPU:[0-9]+ detected Hard LOCKUP"), "BUG: hard lockup",
        no_stack_trace=True)),
    shapes=(c("Watchdog CPU:[0-9]+ (?:detected )?Hard LOCKUP"),),
)
RT_THROTTLING = _simple("sched: RT throttling activated", "sched: RT throttling activated",
                        "sched: RT throttling activated", no_stack_trace=True)

LINUX_OOPSES: tuple[Oops, ...] = (
    _BUG,
    _WARNING,
    _INFO,
    _simple("Unable to handle kernel",
            "Unable to handle kernel (paging request|NULL pointer dereference"
            "|access to user memory)",
            "BUG: unable to handle kernel %[1]v in %[2]v", alt=("bad-access in %[2]v",),
            stack=rip_stack()),
    _simple("general protection fault", "general protection fault.*:",
            "general protection fault in %[1]v", alt=("bad-access in %[1]v",), stack=rip_stack(),
            suppress=(r"^(?:(?!general protection fault ).)*general protection fault .* "
                      r"error:\d+ in ",)),
    _simple("stack segment: ", "stack segment: ", "stack segment fault in %[1]v",
            stack=rip_stack()),
    HARD_LOCKUP,  # before the panic rule: "Kernel panic - not syncing: Watchdog detected hard..."
    PPC_HARD_LOCKUP,
    _PANIC,
    _simple("PANIC: double fault", "PANIC: double fault", "PANIC: double fault in %[1]v",
            stack=StackFmt((RIP_FRAME,))),
    _RUST,
    _KERNEL_BUG,
    _simple("Kernel BUG", "Kernel BUG (.*)", "kernel BUG %[1]v"),
    _simple("BUG kmalloc-", "BUG kmalloc-.*: Object already free", "BUG: Object already free"),
    _simple("divide error:", "divide error: ", "divide error in %[1]v",
            stack=StackFmt((RIP_FRAME,))),
    _simple("divide_error:", "divide_error: ", "divide error in %[1]v",
            stack=StackFmt((RIP_FRAME,))),
    _simple("invalid opcode:", "invalid opcode: ", "invalid opcode in %[1]v",
            stack=StackFmt((RIP_FRAME,))),
    _UBSAN,
    _simple("Booting the kernel.", "^Booting the kernel", "unexpected kernel reboot",
            no_stack_trace=True, suppress=("Parsing ELF|Decompressing Linux|Unknown parameter '",)),
    _simple("unregister_netdevice: waiting for", "unregister_netdevice: waiting for (?:.*) to "
            "become free", "unregister_netdevice: waiting for DEV to become free",
            no_stack_trace=True),
    _simple("VFS: Close: file count is 0", "VFS: Close: file count is 0",
            "VFS: Close: file count is zero (use-after-free)", no_stack_trace=True),
    _simple("VFS: Busy inodes after unmount", "VFS: Busy inodes after unmount",
            "VFS: Busy inodes after unmount (use-after-free)", no_stack_trace=True),
    _simple("Internal error:", "Internal error:", "Internal error in %[1]v",
            alt=("bad-access in %[1]v",), stack=rip_stack()),
    _simple("Unhandled fault:", "Unhandled fault:", "Unhandled fault in %[1]v",
            alt=("bad-access in %[1]v",), stack=rip_stack()),
    _simple("Alignment trap:", "Alignment trap:", "Alignment trap in %[1]v", stack=rip_stack()),
    _TRUSTY,
    _GO_RUNTIME,
    RT_THROTTLING,
    *_COMMON,
)

#: Lines that can sit inside another report without starting a new one.
REPORT_START_IGNORES = tuple(c(p) for p in (
    "invalid opcode: 0000", "Kernel panic - not syncing", "unregister_netdevice: waiting for",
    "PANIC: double fault", "Internal error:",
))

#: Informational messages that carry a stack: inside a report they make it suspect.
INFO_MESSAGES_WITH_STACK = (
    "vmalloc: allocation failure:", "FAULT_INJECTION: forcing a failure",
    "FAULT_FLAG_ALLOW_RETRY missing",
)
