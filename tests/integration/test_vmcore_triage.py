"""vmcore triage on real dumps: crash a guest, dump it through libvirt, write the dossier.

The guest is the stock kernel (or a built one with debug info) booted directly with a
busybox initramfs whose init loads qemu_fw_cfg (so QEMU can put VMCOREINFO in the dump) and
then runs ``echo c > /proc/sysrq-trigger``. The dump is libvirt's memory-only ELF format.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reprolab.detect.report import parse_log
from reprolab.errors import UserError
from reprolab.kernel.artifacts import stock_image
from reprolab.paths import cache_root, runtime_root
from reprolab.proc import run
from reprolab.triage import kdump, rawdump
from reprolab.triage.vmcore import build_dossier, elf_build_id, write_dossier
from reprolab.virt.livedump import take_live_dump

pytestmark = pytest.mark.vm

URI = "qemu:///system"
# The stock kernel is whatever Debian release is installed (point releases move it).
STOCK_KERNEL = stock_image()
STOCK_RELEASE = STOCK_KERNEL.name.removeprefix("vmlinuz-")
INIT = """#!/bin/sh
/bin/mount -t proc proc /proc
/bin/mount -t sysfs sys /sys
/bin/mount -t devtmpfs dev /dev
/bin/insmod /lib/qemu_fw_cfg.ko 2>/dev/null
echo RL-TRIAGE-READY
if /bin/grep -q rl.mode=hung /proc/cmdline; then
  # A writer blocked on a frozen filesystem sleeps in D state until the hung-task detector
  # panics the guest (hung_task_panic=1).
  for m in crc32c_generic crc16 mbcache jbd2 ext4 loop; do /bin/insmod /lib/$m.ko; done
  /bin/dd if=/dev/zero of=/tmp/img bs=1M count=8 2>/dev/null
  /bin/losetup /dev/loop0 /tmp/img
  /bin/mke2fs -q /dev/loop0
  /bin/mkdir -p /mnt
  /bin/mount -t ext4 /dev/loop0 /mnt
  /bin/fsfreeze --freeze /mnt
  (echo x > /mnt/blocked) &
elif /bin/grep -q rl.mode=cfs /proc/cmdline; then
  # A busy loop in a cgroup with a 1 ms / 100 ms CPU quota: its CFS runqueue is throttled
  # most of the time, so the dump catches it throttled.
  /bin/mkdir -p /sys/fs/cgroup
  /bin/mount -t cgroup2 none /sys/fs/cgroup
  echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
  /bin/mkdir /sys/fs/cgroup/bw
  echo "1000 100000" > /sys/fs/cgroup/bw/cpu.max
  /bin/sh -c 'echo $$ > /sys/fs/cgroup/bw/cgroup.procs; while :; do :; done' &
  /bin/sleep 3
  echo c > /proc/sysrq-trigger
else
  echo c > /proc/sysrq-trigger
fi
/bin/sleep 600
"""
HUNG_MODULES = ("crypto/crc32c_generic", "lib/crc16", "fs/mbcache", "fs/jbd2/jbd2",
                "fs/ext4/ext4", "drivers/block/loop")


def _cpio(root: Path, out: Path) -> None:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    raw = out.with_suffix("")
    run(["cpio", "-o", "-H", "newc", "-O", raw], cwd=root, stdin="\n".join(files) + "\n")
    out.write_bytes(gzip.compress(raw.read_bytes()))


def build_initramfs(workdir: Path, release: str) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    root = workdir / "root"
    for d in ("bin", "proc", "sys", "dev", "lib", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in ("sh", "mount", "insmod", "sleep", "echo", "grep", "dd", "losetup", "mke2fs",
                   "mkdir", "fsfreeze"):
        (root / "bin" / applet).symlink_to("busybox")
    for rel in ("drivers/firmware/qemu_fw_cfg", *HUNG_MODULES):
        module = Path(f"/lib/modules/{release}/kernel/{rel}.ko")
        if module.exists():
            shutil.copy(module, root / "lib" / module.name)
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    out = workdir / "initramfs.cpio.gz"
    _cpio(root, out)
    return out


def crash_and_dump(kernel: Path, release: str, workdir: Path, cmdline: str = "",
                   fmt: int = libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW,
                   live: Path | None = None) -> tuple[Path, Path]:
    """Boot, wait for the panic on the console, take a memory-only ELF dump (and, given
    ``live``, a dump read from QEMU's memory there, of the same stopped guest); destroy."""
    initrd = build_initramfs(workdir, release)
    console = workdir / "console.log"
    vmcore = workdir / "vmcore.elf"
    name = f"rl-triage-{os.getpid()}-{int(time.time())}"
    xml = f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd><cmdline>console=ttyS0 panic=0 {cmdline}</cmdline></os>
  <features><acpi/><vmcoreinfo state='on'/></features>
  <cpu mode='custom' match='exact'><model>qemu64</model></cpu>
  <on_crash>preserve</on_crash>
  <devices><serial type='file'><source path='{console}'/><target port='0'/></serial></devices>
</domain>"""
    conn = libvirt.open(URI)
    dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if console.exists() and b"end Kernel panic" in console.read_bytes():
                break
            time.sleep(1)
        else:
            pytest.fail("guest never panicked:\n" + console.read_text(errors="replace")[-2000:])
        if live is not None:
            dom.suspend()  # as the harness does before it dumps: the memory holds still
        dom.coreDumpWithFormat(str(vmcore), fmt, libvirt.VIR_DUMP_MEMORY_ONLY)
        if live is not None:
            take_live_dump(dom, live)
    finally:
        dom.destroy()
        conn.close()
    return vmcore, console


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = runtime_root() / f"triage-test-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # QEMU (libvirt-qemu) writes the console and reads the initramfs here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stock_dump(workdir: Path) -> tuple[Path, Path]:
    return crash_and_dump(STOCK_KERNEL, STOCK_RELEASE, _mkdir(workdir / "stock"))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def test_dossier_without_debug_info(stock_dump: tuple[Path, Path], tmp_path: Path) -> None:
    vmcore, console = stock_dump
    console_report = parse_log(console.read_bytes())
    assert console_report is not None
    assert console_report.title == "kernel panic: sysrq triggered crash"
    report_json = write_dossier(vmcore, None, tmp_path, console_report=console_report,
                                lookup=False)  # no vmlinux found by build id either
    d = json.loads(report_json.read_text())
    assert d["debug_info"] is False and "missing" in d["debug_info_note"]
    assert d["osrelease"] == STOCK_RELEASE
    assert d["panic_message"] == "sysrq triggered crash"
    assert d["dmesg_crash"]["title"] == "kernel panic: sysrq triggered crash"
    assert d["console_crash"]["title"] == console_report.title
    assert d["uptime_s"] and d["uptime_s"] > 0
    assert len(d["cpus"]) == 2
    assert any(any(f.startswith("sysrq_handle_crash") for f in c["stack"]) for c in d["cpus"])
    md = (tmp_path / "report.md").read_text()
    assert "Debug info missing" in md and "sysrq triggered crash" in md


def test_vmlinux_that_does_not_match_is_a_user_error(stock_dump: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    vmcore, _ = stock_dump
    with pytest.raises(UserError, match="does not match the dump"):
        write_dossier(vmcore, Path("/bin/ls"), tmp_path)
    with pytest.raises(UserError, match="not an ELF vmlinux"):
        write_dossier(vmcore, STOCK_KERNEL, tmp_path)  # a bzImage is not a vmlinux


def test_truncated_dump_still_gives_a_dossier(stock_dump: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    vmcore, _ = stock_dump
    cut = tmp_path / "cut.elf"
    with vmcore.open("rb") as src:
        cut.write_bytes(src.read(1 << 20))
    d = json.loads(write_dossier(cut, None, tmp_path / "out").read_text())
    assert d["osrelease"] == STOCK_RELEASE
    assert d["errors"]  # what could not be read is said, not hidden


def _stock_vmlinux() -> Path | None:
    """The stock kernel's vmlinux with debug info (linux-image-*-dbg), if installed."""
    for path in (os.environ.get("REPROLAB_TRIAGE_VMLINUX"),
                 f"/usr/lib/debug/boot/vmlinux-{STOCK_RELEASE}"):
        if path and Path(path).is_file() and elf_build_id(Path(path)):
            return Path(path)
    return None


@pytest.fixture(scope="module")
def stock_vmlinux() -> Path:
    found = _stock_vmlinux()
    if found is None:
        pytest.skip(f"no debug info for {STOCK_RELEASE}: install linux-image-{STOCK_RELEASE}-dbg "
                    "or set REPROLAB_TRIAGE_VMLINUX")
    return found


def test_dossier_with_debug_info(stock_dump: tuple[Path, Path], stock_vmlinux: Path,
                                 tmp_path: Path) -> None:
    vmcore, _ = stock_dump
    d = json.loads(write_dossier(vmcore, stock_vmlinux, tmp_path).read_text())
    assert d["debug_info"] is True and not d["errors"]
    assert d["panic_message"] == "sysrq triggered crash"
    assert len(d["cpus"]) == 2 and all(c["stack_reliable"] for c in d["cpus"])
    crashing = [c for c in d["cpus"] if any("sysrq_handle_crash" in f for f in c["stack"])]
    assert crashing and crashing[0]["pid"] == 1  # the shell running as init
    assert len(d["runqueues"]) == 2
    assert "## Runqueues" in (tmp_path / "report.md").read_text()


def test_hung_task_dossier_lists_d_state_task(workdir: Path, stock_vmlinux: Path,
                                              tmp_path: Path) -> None:
    vmcore, console = crash_and_dump(
        STOCK_KERNEL, STOCK_RELEASE, _mkdir(workdir / "hung"),
        "rl.mode=hung sysctl.kernel.hung_task_timeout_secs=5 hung_task_panic=1")
    rep = parse_log(console.read_bytes())
    assert rep is not None and rep.signature.key == "hung-task:mnt_want_write"
    d = json.loads(write_dossier(vmcore, stock_vmlinux, tmp_path, console_report=rep).read_text())
    assert d["panic_message"] == "hung_task: blocked tasks"
    blocked = [t for t in d["d_state_tasks"] if any("mnt_want_write" in f for f in t["stack"])]
    assert blocked, d["d_state_tasks"]
    assert d["console_crash"]["title"] == "INFO: task hung in mnt_want_write"


def test_kdump_zlib_dump_is_read_like_an_elf_one(workdir: Path, tmp_path: Path) -> None:
    vmcore, _ = crash_and_dump(STOCK_KERNEL, STOCK_RELEASE, _mkdir(workdir / "kdump"),
                               fmt=libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_KDUMP_ZLIB)
    assert vmcore.stat().st_size <= (512 << 20) // 10  # compressed: a tenth of guest memory
    vmlinux = _stock_vmlinux()
    d = json.loads(write_dossier(vmcore, vmlinux, tmp_path).read_text())
    assert d["format"] in ("kdump", "kdump-flattened")
    assert d["panic_message"] == "sysrq triggered crash"
    assert any(any("sysrq_handle_crash" in f for f in c["stack"]) for c in d["cpus"])
    assert not list(tmp_path.glob("*.elf"))  # no ELF rewrite left behind
    # drgn read the kdump file in place (told its platform); the ELF rewrite, kept on
    # request, gives the same dossier.
    assert d["read_as"] == "kdump"
    elf = tmp_path / "kept" / "vmcore.elf"
    elf.parent.mkdir()
    rewritten = build_dossier(vmcore, vmlinux, keep_elf=elf)
    assert rewritten["read_as"] == "elf rewrite" and elf.is_file()
    _same_dossier(d, rewritten)
    # crash reads the same file as it is (Debian's crash 8.0.2 handles stock 6.1 dumps).
    _crash_names_the_release(vmcore)
    if vmlinux is not None:
        done = run(["crash", "-s", str(vmlinux), str(vmcore)], check=False, timeout=300,
                   stdin="bt\nquit\n")
        assert "sysrq_handle_crash" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def _same_dossier(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("cpus", "dmesg_tail", "panic_message", "panic_cpu", "runqueues", "errors"):
        assert a.get(key) == b.get(key), key


def _crash_names_the_release(vmcore: Path) -> None:
    """crash opens the file as it is and finds the stock kernel's release in it (skipped
    without crash installed)."""
    if shutil.which("crash") is None:
        pytest.skip("crash is not installed (apt-get install crash)")
    done = run(["crash", "--osrelease", str(vmcore)], check=False, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == STOCK_RELEASE, done.stdout + done.stderr


def _same_memory(live: Path, qemus: Path, workdir: Path) -> None:
    """Every page of the dump read from QEMU's memory is the page QEMU's own dump holds at
    that address, and no nonzero page of guest RAM is missing from it."""
    plain = workdir / "qemu.plain.kdump"
    rawdump.unflatten(qemus, plain)
    ours = dict(kdump.pages(live))
    theirs = dict(kdump.pages(plain))
    zero = bytes(4096)
    ram_end = max(ours) + 4096
    assert len(ours) == 512 << 8  # every frame of 512 MiB, zero ones included
    assert [a for a, page in ours.items() if theirs.get(a, zero) != page] == []
    assert [a for a, page in theirs.items() if a < ram_end and page != zero
            and a not in ours] == []
    assert kdump.notes(live) == kdump.notes(plain)  # CPU registers, VMCOREINFO
    plain.unlink()


def test_dump_read_from_qemus_memory_is_qemus_dump(workdir: Path, tmp_path: Path) -> None:
    live = _mkdir(workdir / "live") / "live.kdump"
    vmcore, _ = crash_and_dump(STOCK_KERNEL, STOCK_RELEASE, live.parent,
                               fmt=libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_KDUMP_ZLIB, live=live)
    _same_memory(live, vmcore, tmp_path)
    assert live.stat().st_size <= (512 << 20) // 10
    vmlinux = _stock_vmlinux()
    ours = json.loads(write_dossier(live, vmlinux, _mkdir(tmp_path / "ours")).read_text())
    theirs = json.loads(write_dossier(vmcore, vmlinux, _mkdir(tmp_path / "qemu")).read_text())
    assert ours["read_as"] == "kdump"
    assert ours["panic_message"] == "sysrq triggered crash"
    assert any(any("sysrq_handle_crash" in f for f in c["stack"]) for c in ours["cpus"])
    _same_dossier(ours, theirs)
    _crash_names_the_release(live)


def _debug_kernel() -> tuple[Path, Path] | None:
    """A built kernel whose cache entry holds both bzImage and a vmlinux with a build id."""
    for vmlinux in sorted((cache_root() / "kernels").glob("*/vmlinux")):
        image = vmlinux.with_name("bzImage")
        if image.exists() and elf_build_id(vmlinux):
            return image, vmlinux
    return None


def test_dossier_shows_throttled_cfs_group(workdir: Path, tmp_path: Path) -> None:
    found = _debug_kernel()
    if found is None:
        pytest.skip("no kernel with debug info (bzImage + vmlinux) under cache/kernels yet")
    image, vmlinux = found
    vmcore, _ = crash_and_dump(image, "none", _mkdir(workdir / "cfs"), "rl.mode=cfs")
    d = json.loads(write_dossier(vmcore, vmlinux, tmp_path).read_text())
    groups = [g for rq in d["runqueues"] for g in rq["throttled_cfs_rqs"]]
    assert any(g["group"].endswith("bw") and g["runtime_remaining"] <= 0 for g in groups), d
    assert "bw" in (tmp_path / "report.md").read_text()


def test_debug_dossier_of_a_dump_read_from_qemus_memory(workdir: Path, tmp_path: Path
                                                        ) -> None:
    """With debug info every stack unwinds from the registers in the notes QEMU gave, as
    from QEMU's own dump. (Debian's crash 8.0.2 cannot open this 6.12 kernel's dumps at
    all, QEMU's included: kmem_cache_s_num; it reads the stock kernel's, tested above.)"""
    found = _debug_kernel()
    if found is None:
        pytest.skip("no kernel with debug info (bzImage + vmlinux) under cache/kernels yet")
    image, vmlinux = found
    live = _mkdir(workdir / "live-debug") / "live.kdump"
    vmcore, _ = crash_and_dump(image, "none", live.parent,
                               fmt=libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_KDUMP_ZLIB, live=live)
    _same_memory(live, vmcore, tmp_path)
    ours = json.loads(write_dossier(live, vmlinux, _mkdir(tmp_path / "ours")).read_text())
    theirs = json.loads(write_dossier(vmcore, vmlinux, _mkdir(tmp_path / "qemu")).read_text())
    assert ours["debug_info"] is True
    assert ours["cpus"] and all(c["stack_reliable"] for c in ours["cpus"])
    assert any("sysrq_handle_crash" in " ".join(c["stack"]) for c in ours["cpus"])
    _same_dossier(ours, theirs)


def test_dossier_with_debug_info_built_kernel(workdir: Path, tmp_path: Path) -> None:
    found = _debug_kernel()
    if found is None:
        pytest.skip("no kernel with debug info (bzImage + vmlinux) under cache/kernels yet")
    image, vmlinux = found
    vmcore, _ = crash_and_dump(image, "none", _mkdir(workdir / "debug"))
    d = json.loads(write_dossier(vmcore, vmlinux, tmp_path).read_text())
    assert d["debug_info"] is True
    assert "sysrq triggered crash" in (d.get("panic_message") or "")
    assert d["cpus"] and all(c["stack_reliable"] for c in d["cpus"])
    assert any("sysrq_handle_crash" in " ".join(c["stack"]) for c in d["cpus"])
    assert len(d["runqueues"]) == len(d["cpus"])
