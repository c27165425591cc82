"""vmcore triage: a dossier of what the kernel was doing when it was dumped.

With debug info, drgn reads kernel structures: every CPU's stack, tasks stuck in D state,
runqueues (throttled CFS/RT state is what bandwidth-control bugs leave behind), held locks
when lockdep records them. Without it the dossier still reports what the dump itself carries
(see :mod:`reprolab.triage.rawdump`) and says plainly that debug info is missing, because a
half-empty dossier that looks complete sends people looking in the wrong place.

Every section is gathered independently: one unreadable structure in a damaged dump costs
that section (recorded under ``errors``), never the dossier.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from reprolab.detect.report import CrashReport, parse_log
from reprolab.errors import UserError
from reprolab.kernel.elf import elf_build_id
from reprolab.modes import private_like
from reprolab.proc import run
from reprolab.triage import kdump, rawdump
from reprolab.triage.dossier import render_markdown

MAX_TASKS = 200
DMESG_TAIL = 200


def _drgn() -> Any:
    try:
        import drgn
    except ImportError as exc:  # pragma: no cover - drgn is a dependency
        raise UserError("drgn is not installed: pip install drgn") from exc
    return drgn


#: drgn's name for the architecture a kdump header names (libkdumpfile cannot tell it).
_KDUMP_ARCHES = {"x86_64": "X86_64", "aarch64": "AARCH64", "ppc64le": "PPC64",
                 "s390x": "S390X", "riscv64": "RISCV64"}


def _platform(vmcore: Path) -> Any:
    """The platform of a plain kdump file, for drgn (None: an ELF core names its own)."""
    if not kdump.is_kdump(vmcore):
        return None
    drgn = _drgn()
    named = kdump.machine(vmcore)
    arch = _KDUMP_ARCHES.get(named)
    if arch is None:
        raise UserError(f"{vmcore}: kdump header names no architecture drgn knows "
                        f"({named!r})")
    flags = drgn.PlatformFlags.IS_64_BIT
    if arch != "S390X":
        flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return drgn.Platform(getattr(drgn.Architecture, arch), flags)


def _open(vmcore: Path) -> Any:
    rawdump.check_elf(vmcore)
    drgn = _drgn()
    platform = _platform(vmcore)
    prog = drgn.Program(platform) if platform is not None else drgn.Program()
    try:
        prog.set_core_dump(str(vmcore))
    except Exception as exc:
        raise UserError(f"drgn cannot open {vmcore} as a kernel dump: {exc}") from None
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise UserError(f"{vmcore} is a core dump but not of a Linux kernel (no VMCOREINFO)")
    return prog


def _vmcoreinfo(prog: Any) -> dict[str, str]:
    try:
        return rawdump.parse_vmcoreinfo(prog["VMCOREINFO"].string_().decode(errors="replace"))
    except Exception:
        return {}


def _load_debug_info(prog: Any, vmlinux: Path, info: dict[str, str]) -> None:
    if not vmlinux.is_file():
        raise UserError(f"vmlinux {vmlinux} does not exist")
    want = info.get("BUILD-ID")
    have = elf_build_id(vmlinux)
    if have is None:
        raise UserError(f"{vmlinux} is not an ELF vmlinux with a build id")
    if want and not have.startswith(want.lower()) and not want.lower().startswith(have):
        raise UserError(
            f"{vmlinux} does not match the dump: build id {have} but the dumped kernel "
            f"({info.get('OSRELEASE', '?')}) has {want}"
        )
    drgn = _drgn()
    try:
        prog.load_debug_info([str(vmlinux)])
    except drgn.MissingDebugInfoError as exc:
        raise UserError(f"{vmlinux} has no usable debug info for this dump: {exc}") from None


class _Collector:
    """Runs each section, keeping its error instead of failing the dossier."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            return fn()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            return default


def _symbolizer(prog: Any) -> Callable[[int], str]:
    def name(addr: int) -> str:
        try:
            sym = prog.symbol(addr)
        except (LookupError, ValueError, OverflowError):
            return hex(addr)
        return f"{sym.name}+{addr - sym.address:#x}"

    return name


def _raw_sections(prog: Any, vmcore: Path, info: dict[str, str], col: _Collector,
                  with_kallsyms: bool) -> dict[str, Any]:
    """What needs no debug info: printk ring, per-CPU registers, kallsyms names."""
    out: dict[str, Any] = {}

    def read(addr: int, size: int) -> bytes:
        return bytes(prog.read(addr, size))

    if with_kallsyms:
        def load() -> None:
            from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

            prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)

        col.run("kallsyms", load)
    name = _symbolizer(prog)
    records = col.run("printk", lambda: rawdump.read_printk(read, info), [])
    lines = [r.console_line() for r in records]
    out["dmesg_tail"] = lines[-DMESG_TAIL:]
    out["uptime_s"] = round(records[-1].ts_nsec / 1e9, 3) if records else None
    out["panic_message"] = next(
        (r.text.split("Kernel panic - not syncing:", 1)[1].strip()
         for r in reversed(records) if "Kernel panic - not syncing:" in r.text
         and "end Kernel panic" not in r.text), None)
    def panic_cpu() -> int | None:
        cpu = int.from_bytes(read(prog.symbol("panic_cpu").address, 4), "little", signed=True)
        return cpu if cpu >= 0 else None

    out["panic_cpu"] = col.run("panic_cpu", panic_cpu)
    report = parse_log("\n".join(lines)) if lines else None
    out["dmesg_crash"] = report.to_json() if report else None
    text_lo = int(info.get("SYMBOL(_stext)", "0"), 16)
    text_hi = col.run("etext", lambda: prog.symbol("_etext").address, text_lo + (32 << 20))

    def cpus() -> list[dict[str, Any]]:
        res = []
        for regs in rawdump.prstatus_notes(vmcore):
            stack = rawdump.scan_stack(read, regs.sp, lambda v: text_lo <= v < text_hi)
            res.append({
                "cpu": regs.cpu, "ip": hex(regs.ip), "ip_symbol": name(regs.ip),
                "sp": hex(regs.sp), "stack": [name(a) for a in stack[:64]],
                "stack_reliable": False,
            })
        return res

    out["cpus"] = col.run("cpus", cpus, [])
    return out


def _format_frame(frame: Any) -> str:
    """A frame the way symbolized kernel traces print it: func+off/size file:line."""
    if frame.is_inline:
        text = f"{frame.name} [inline]"
    else:
        try:
            sym = frame.symbol()
            text = f"{sym.name}+{frame.pc - sym.address:#x}/{sym.size:#x}"
        except LookupError:
            text = frame.name or hex(frame.pc)
    try:
        filename, line, _col = frame.source()
        text += f" {filename}:{line}"
    except LookupError:
        pass
    return str(text)


def _task_stack(prog: Any, task: Any) -> list[str]:
    out = []
    for frame in prog.stack_trace(task):
        if not frame.pc and not frame.is_inline:
            break  # the unwinder ran past the entry frame into zeroed registers
        out.append(_format_frame(frame))
        if len(out) >= 64:
            break
    while out and out[-1].startswith("0x"):
        out.pop()  # user-space return address or garbage past the entry frame
    return out


def _debug_sections(prog: Any, col: _Collector) -> dict[str, Any]:
    from drgn.helpers.linux.cpumask import for_each_present_cpu
    from drgn.helpers.linux.panic import panic_message
    from drgn.helpers.linux.percpu import per_cpu
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import cpu_curr, task_state_to_char

    out: dict[str, Any] = {}
    msg = col.run("panic_message", lambda: panic_message(prog))
    if msg is not None:
        text = msg.decode(errors="replace").strip()
        out["panic_message"] = text.split("Kernel panic - not syncing:", 1)[-1].strip()

    def cpus() -> list[dict[str, Any]]:
        # Present, not online: panic() takes the other CPUs offline before the dump.
        res = []
        for cpu in for_each_present_cpu(prog):
            task = cpu_curr(prog, cpu)
            entry: dict[str, Any] = {"cpu": cpu, "pid": int(task.pid),
                                     "comm": task.comm.string_().decode(errors="replace"),
                                     "stack_reliable": True}
            try:
                entry["stack"] = _task_stack(prog, task)
            except Exception as exc:
                entry["stack"], entry["stack_error"] = [], str(exc)
            res.append(entry)
        return res

    out["cpus"] = col.run("cpus", cpus, [])

    def d_state() -> list[dict[str, Any]]:
        res = []
        for task in for_each_task(prog):
            if task_state_to_char(task) != "D":
                continue
            entry: dict[str, Any] = {"pid": int(task.pid),
                                     "comm": task.comm.string_().decode(errors="replace")}
            entry["stack"] = col.run(f"stack:{entry['pid']}", partial(_task_stack, prog, task), [])
            entry["held_locks"] = _held_locks(prog, task)
            res.append(entry)
            if len(res) >= MAX_TASKS:
                break
        return res

    out["d_state_tasks"] = col.run("d_state_tasks", d_state, [])

    def runqueues() -> list[dict[str, Any]]:
        res = []
        for cpu in for_each_present_cpu(prog):
            rq = per_cpu(prog["runqueues"], cpu)
            entry = {"cpu": cpu, "nr_running": int(rq.nr_running),
                     "cfs_nr_running": int(rq.cfs.nr_running),
                     "rt_nr_running": int(rq.rt.rt_nr_running),
                     "rt_throttled": bool(rq.rt.rt_throttled),
                     "curr_pid": int(rq.curr.pid)}
            entry["throttled_cfs_rqs"] = col.run(
                f"cfs_bandwidth:{cpu}", partial(_throttled_cfs, prog, cpu), [])
            res.append(entry)
        return res

    out["runqueues"] = col.run("runqueues", runqueues, [])
    out["lockdep"] = col.run("lockdep", lambda: "held_locks" in
                             {m.name for m in prog.type("struct task_struct").members}, False)
    return out


def _throttled_cfs(prog: Any, cpu: int) -> list[dict[str, Any]]:
    """Task groups whose CFS runqueue on this CPU is bandwidth-throttled."""
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.sched import task_group_name

    res = []
    for tg in list_for_each_entry("struct task_group", prog["task_groups"].address_of_(), "list"):
        cfs_rq = tg.cfs_rq[cpu]
        if cfs_rq and cfs_rq.throttled:
            res.append({"group": task_group_name(tg).decode(errors="replace"),
                        "runtime_remaining": int(cfs_rq.runtime_remaining),
                        "nr_running": int(cfs_rq.nr_running)})
            if len(res) >= MAX_TASKS:
                break
    return res


def _held_locks(prog: Any, task: Any) -> list[str] | None:
    """Locks lockdep records as held by the task; None when the kernel records none."""
    try:
        depth = int(task.lockdep_depth)
    except (AttributeError, LookupError):
        return None
    name = _symbolizer(prog)
    out = []
    for i in range(min(depth, 48)):
        hl = task.held_locks[i]
        lock = hl.instance.name.string_().decode(errors="replace") if hl.instance else "?"
        out.append(f"{lock} at {name(int(hl.acquire_ip))}")
    return out


def _crash_fallback(vmcore: Path, why: UserError) -> dict[str, Any]:
    """For a dump drgn cannot open, ask ``crash`` what it can tell without symbols.

    crash reads more dump formats (old diskdump variants, split dumps) and can still name
    the kernel release from VMCOREINFO, which at least says which kernel to look at.
    """
    if shutil.which("crash") is None:
        raise why
    done = run(["crash", "--osrelease", str(vmcore)], check=False, timeout=120)
    release = done.stdout.strip().splitlines()[-1:] if done.ok else []
    if not release or not release[0] or " " in release[0]:
        raise why
    return {"osrelease": release[0], "reader": "crash",
            "debug_info_note": f"drgn could not open this dump ({why}); crash only gave the "
                               "kernel release"}


def build_dossier(vmcore: Path, vmlinux: Path | None, *,
                  console_report: CrashReport | None = None,
                  keep_elf: Path | None = None, lookup: bool = True) -> dict[str, Any]:
    """The dossier as a dict (what report.json holds). Raises UserError on unusable input.

    Without ``vmlinux`` one with the dump's build ID is looked for (kernel cache, Debian's
    -dbg files) unless ``lookup`` is off.

    kdump-compressed dumps (flattened or not) are first rewritten as a sparse ELF core in a
    temporary directory, removed afterwards unless ``keep_elf`` names where to keep it. The
    dossier ends with the commands that open the dump (``open_with``).
    """
    from reprolab.triage.opendump import open_commands

    dossier = _build_any(Path(vmcore), vmlinux, console_report, keep_elf, lookup)
    found = dossier.get("vmlinux")
    dossier["open_with"] = open_commands(Path(vmcore), dossier["format"],
                                         Path(found) if found else None,
                                         dossier.get("osrelease"), converted=keep_elf)
    return dossier


def _build_any(vmcore: Path, vmlinux: Path | None, console_report: CrashReport | None,
               keep_elf: Path | None, lookup: bool) -> dict[str, Any]:
    vmcore = Path(vmcore)
    rawdump.check_elf(vmcore)
    fmt = "elf"
    if rawdump.is_flattened(vmcore) or kdump.is_kdump(vmcore):
        fmt = "kdump-flattened" if rawdump.is_flattened(vmcore) else "kdump"
        with tempfile.TemporaryDirectory(prefix="reprolab-vmcore-") as tmp:
            plain = vmcore
            if fmt == "kdump-flattened":
                plain = Path(tmp) / "vmcore.kdump"
                rawdump.unflatten(vmcore, plain)
            prog = None
            if keep_elf is None:
                # Read in place: drgn decompresses only the pages it reads. Only drgn's
                # refusal to open it sends the dump to the rewrite; a later error (a vmlinux
                # of another build) is the dossier's own, whichever way it was read.
                with contextlib.suppress(UserError):
                    prog = _open(plain)
            if prog is not None:
                dossier = _build(plain, vmlinux, console_report, lookup, prog=prog)
                dossier["read_as"] = "kdump"
            else:
                elf = keep_elf or Path(tmp) / "vmcore.elf"
                kdump.kdump_to_elf(plain, elf)
                dossier = _build(elf, vmlinux, console_report, lookup)
                dossier["read_as"] = "elf rewrite"
    else:
        dossier = _build(vmcore, vmlinux, console_report, lookup)
    dossier["vmcore"], dossier["format"] = str(vmcore), fmt
    return dossier


def _build(vmcore: Path, vmlinux: Path | None,
           console_report: CrashReport | None, lookup: bool = True, *,
           prog: Any = None) -> dict[str, Any]:
    try:
        prog = prog if prog is not None else _open(vmcore)
    except rawdump.NotAVmcore:
        raise
    except UserError as exc:
        partial_dossier = {"vmcore": str(vmcore), "vmlinux": str(vmlinux) if vmlinux else None,
                           "debug_info": False, **_crash_fallback(vmcore, exc), "cpus": [],
                           "errors": {"drgn": str(exc)}}
        if console_report is not None:
            partial_dossier["console_crash"] = console_report.to_json()
        return partial_dossier
    info = _vmcoreinfo(prog)
    col = _Collector()
    debug = False
    found_by_id = False
    if vmlinux is None and lookup:
        from reprolab.kernel.debuginfo import find_vmlinux

        vmlinux = find_vmlinux(info.get("BUILD-ID"))
        found_by_id = vmlinux is not None
    if vmlinux is not None:
        _load_debug_info(prog, Path(vmlinux), info)
        debug = True
    dossier: dict[str, Any] = {
        "vmcore": str(vmcore),
        "vmlinux": str(vmlinux) if vmlinux else None,
        "debug_info": debug,
        "osrelease": info.get("OSRELEASE"),
        "build_id": info.get("BUILD-ID"),
        "kernel_offset": info.get("KERNELOFFSET"),
    }
    if found_by_id:
        dossier["vmlinux_found_by"] = "build id"
    if not debug:
        dossier["debug_info_note"] = (
            "debug info for this kernel is missing: stacks are guesses from stack memory, "
            "no D-state tasks, runqueues or held locks (pass --vmlinux with a matching vmlinux)"
        )
    dossier.update(_raw_sections(prog, vmcore, info, col, with_kallsyms=not debug))
    if debug:
        dossier.update({k: v for k, v in _debug_sections(prog, col).items() if v is not None})
    if console_report is not None:
        dossier["console_crash"] = console_report.to_json()
    dossier["errors"] = col.errors
    return dossier


def write_dossier(vmcore: Path, vmlinux: Path | None, out_dir: Path, *,
                  console_report: CrashReport | None = None,
                  keep_elf: Path | None = None, lookup: bool = True) -> Path:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return report.json's path."""
    dossier = build_dossier(vmcore, vmlinux, console_report=console_report, keep_elf=keep_elf,
                            lookup=lookup)
    out_dir = Path(out_dir)
    path = out_dir / "report.json"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # The dossier carries the guest's kernel log and memory contents: no wider
        # permissions than the vmcore it was read from (written private, then matched).
        for target, text in ((path, json.dumps(dossier, indent=2) + "\n"),
                             (out_dir / "report.md", render_markdown(dossier))):
            target.unlink(missing_ok=True)
            with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                           "w") as sink:
                sink.write(text)
            private_like(target, vmcore)
    except OSError as exc:
        raise UserError(f"cannot write the dossier into {out_dir}: {exc.strerror}") from None
    return path
