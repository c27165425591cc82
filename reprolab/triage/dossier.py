"""The dossier for people: report.md, rendered from the same dict as report.json.

The order follows how a kernel engineer reads a dump: what killed it, where each CPU was,
who is stuck and on what, then the log. Missing debug info is said first, not buried.
"""

from __future__ import annotations

from typing import Any


def _stack(lines: list[str], frames: list[str], reliable: bool) -> None:
    if not frames:
        lines.append("  (no stack)")
        return
    mark = "" if reliable else "? "
    lines.append("  ```")
    lines.extend(f"  {mark}{f}" for f in frames)
    lines.append("  ```")


def render_markdown(d: dict[str, Any]) -> str:
    lines: list[str] = [f"# vmcore dossier: {d.get('osrelease') or 'unknown kernel'}", ""]
    lines.append(f"- dump: `{d.get('vmcore')}`")
    found = " (found by build id)" if d.get("vmlinux_found_by") else ""
    lines.append(f"- vmlinux: `{d.get('vmlinux')}`{found}" if d.get("vmlinux")
                 else "- vmlinux: none")
    if d.get("build_id"):
        lines.append(f"- build id: `{d['build_id']}`")
    if d.get("uptime_s") is not None:
        lines.append(f"- uptime at last log record: {d['uptime_s']} s")
    if not d.get("debug_info"):
        lines += ["", f"> **Debug info missing.** {d.get('debug_info_note', '')}"]
    lines += ["", "## Panic", ""]
    lines.append(f"`{d['panic_message']}`" if d.get("panic_message") else
                 "No panic message in the dump: the kernel may not have panicked (a hung guest "
                 "dumped alive).")
    for key, label in (("console_crash", "Console"), ("dmesg_crash", "Kernel log in the dump")):
        crash = d.get(key)
        if crash:
            lines.append(f"- {label}: **{crash['title']}** (kind `{crash['kind']}`"
                         f"{', corrupted' if crash.get('corrupted') else ''})")
    lines += ["", "## CPUs", ""]
    for cpu in d.get("cpus", []):
        who = f" pid {cpu['pid']} `{cpu.get('comm', '')}`" if "pid" in cpu else ""
        where = f" at `{cpu['ip_symbol']}`" if cpu.get("ip_symbol") else ""
        lines.append(f"- CPU {cpu['cpu']}{who}{where}")
        _stack(lines, cpu.get("stack", []), cpu.get("stack_reliable", False))
    if not d.get("cpus"):
        lines.append("No CPU state recovered.")
    if d.get("debug_info"):
        lines += ["", "## Tasks in D state", ""]
        for task in d.get("d_state_tasks", []):
            lines.append(f"- pid {task['pid']} `{task['comm']}`")
            _stack(lines, task.get("stack", []), True)
            if task.get("held_locks"):
                lines.extend(f"  - holds {lock}" for lock in task["held_locks"])
        if not d.get("d_state_tasks"):
            lines.append("None.")
        if not d.get("lockdep"):
            lines.append("")
            lines.append("Held locks are not recorded by this kernel (CONFIG_LOCKDEP off).")
        lines += ["", "## Runqueues", "", "| CPU | running | CFS | RT | RT throttled | "
                  "throttled CFS groups |", "|---|---|---|---|---|---|"]
        for rq in d.get("runqueues", []):
            groups = ", ".join(g["group"] for g in rq.get("throttled_cfs_rqs", [])) or "-"
            lines.append(f"| {rq['cpu']} | {rq['nr_running']} | {rq['cfs_nr_running']} | "
                         f"{rq['rt_nr_running']} | {'yes' if rq['rt_throttled'] else 'no'} | "
                         f"{groups} |")
    if d.get("errors"):
        lines += ["", "## Sections that could not be read", ""]
        lines.extend(f"- {k}: {v}" for k, v in d["errors"].items())
    if d.get("dmesg_tail"):
        lines += ["", "## Kernel log (tail)", "", "```"]
        lines.extend(d["dmesg_tail"][-80:])
        lines.append("```")
    if d.get("open_with"):
        from reprolab.triage.opendump import render

        lines += render(d["open_with"])
    return "\n".join(lines) + "\n"
