"""Patched kernels, for real: Debian's 6.12 source, the small config, and a guest on it.

The build tests compile a real tree (the first run takes minutes on two cores, later ones
hit the shared cache under /var/lib/reprolab/cache/kernels); the bad-input tests stop
before compiling, except the compiler-error one, which ccache makes short. The boot test
runs the built kernel under libvirt (TCG) and provokes a hard lockup with LKDTM: TCG has
no PMU, so only the buddy detector can catch it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import drgn
import pytest

from reprolab.case import CaseSpec
from reprolab.errors import UserError
from reprolab.guest.handle import Guest
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.config import ConfigError
from reprolab.kernel.patches import PatchError
from reprolab.kernel.resolve import resolve_kernel
from reprolab.kernel.spec import parse_kernel_spec
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome

SOURCE = "linux-source-6.12"
SMALL = f"build:{SOURCE}"
TARBALL = Path(f"/usr/src/{SOURCE}.tar.xz")

pytestmark = pytest.mark.skipif(
    not TARBALL.exists(), reason=f"{TARBALL} missing (apt-get install {SOURCE})"
)


@pytest.fixture(scope="module")
def small() -> KernelArtifacts:
    return resolve_kernel(parse_kernel_spec(SMALL))


@pytest.fixture
def scratch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache root for builds meant to fail before compiling: no shared litter."""
    path = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(path))
    return path


def test_small_config_builds_with_everything_reprolab_needs(small: KernelArtifacts) -> None:
    assert small.origin == "build"
    assert small.release.startswith("6.12.")
    assert small.image.stat().st_size > 1 << 20
    assert (small.image.stat().st_mode & 0o044) == 0o044  # libvirt-qemu must read it
    for option in ("64BIT", "SMP", "SERIAL_8250_CONSOLE", "LKDTM", "RUNTIME_TESTING_MENU",
                   "HARDLOCKUP_DETECTOR_BUDDY", "SOFTLOCKUP_DETECTOR", "DETECT_HUNG_TASK",
                   "CFS_BANDWIDTH", "RT_GROUP_SCHED", "KVM_AMD", "KVM_INTEL", "PVPANIC_MMIO",
                   "FW_CFG_SYSFS", "I6300ESB_WDT", "CRASH_DUMP", "DEBUG_INFO", "PRINTK_CALLER"):
        assert small.config_value(option) == "y", option
    assert small.config_value("HARDLOCKUP_DETECTOR_PERF") is None
    assert (small.modules_dir / "modules.dep").is_file()
    assert "pvpanic" in (small.modules_dir / "modules.builtin").read_text()
    assert small.vmlinux is not None
    sections = subprocess.run(["readelf", "-S", str(small.vmlinux)], capture_output=True,
                              text=True, check=True).stdout
    assert ".debug_info" in sections
    assert resolve_kernel(parse_kernel_spec(SMALL)) == small  # a cache hit, same artifacts


def test_option_with_a_missing_dependency_is_named(tmp_path: Path, scratch_cache: Path) -> None:
    frag = tmp_path / "no-testing-menu.config"
    frag.write_text("# CONFIG_RUNTIME_TESTING_MENU is not set\n")
    with pytest.raises(ConfigError) as info:
        resolve_kernel(parse_kernel_spec(f"{SMALL}+fragment={frag}"),
                       artifacts_dir=tmp_path / "art")
    message = str(info.value)
    assert message.startswith("CONFIG_LKDTM=y (reprolab.config:")
    assert "unmet dependency RUNTIME_TESTING_MENU [if RUNTIME_TESTING_MENU (lib/Kconfig.debug:" \
        in message
    assert "\n" not in message
    assert "config verification failed" in (tmp_path / "art" / "build.log").read_text()


def test_fragment_typo_is_named(tmp_path: Path, scratch_cache: Path) -> None:
    frag = tmp_path / "typo.config"
    frag.write_text("# tmpfs for the scenario's scratch space\nCONFIG_TMPFFS=y\n")
    with pytest.raises(ConfigError, match=r"^CONFIG_TMPFFS=y \(typo.config:2\) did not land, "
                                          r"got n: no such option"):
        resolve_kernel(parse_kernel_spec(f"{SMALL}+fragment={frag}"))


def test_tree_that_is_not_a_kernel(tmp_path: Path, scratch_cache: Path) -> None:
    (tmp_path / "Makefile").write_text("all:\n")
    with pytest.raises(UserError, match="is not a Linux kernel tree"):
        resolve_kernel(parse_kernel_spec(f"build:{tmp_path}"))


def test_patch_that_does_not_apply_names_patch_and_file(
    tmp_path: Path, scratch_cache: Path
) -> None:
    series = tmp_path / "series.d"
    series.mkdir()
    (series / "0001-stale.patch").write_text(
        "--- a/kernel/watchdog.c\n+++ b/kernel/watchdog.c\n@@ -1,3 +1,3 @@\n"
        "-// this line is not in 6.12\n+// nor is this one\n /*\n"
        "  * Detect hard and soft lockups on a system\n"
    )
    with pytest.raises(PatchError, match=r"^patch 1/1 0001-stale.patch does not apply at "
                                         r"kernel/watchdog.c \(patch: "):
        resolve_kernel(parse_kernel_spec(f"{SMALL}+patches={series}"))


def test_compiler_error_is_one_line_with_the_log_kept(tmp_path: Path) -> None:
    series = tmp_path / "series.d"
    series.mkdir()
    (series / "0001-break.patch").write_text(
        "--- a/init/version.c\n+++ b/init/version.c\n@@ -7,6 +7,7 @@\n"
        "  *  May be freely distributed as part of Linux.\n  */\n \n"
        "+#error reprolab test: broken on purpose\n"
        " #include <generated/compile.h>\n #include <linux/build-salt.h>\n"
        " #include <linux/elfnote-lto.h>\n"
    )
    art = tmp_path / "art"
    with pytest.raises(UserError) as info:
        resolve_kernel(parse_kernel_spec(f"{SMALL}+patches={series}"), artifacts_dir=art)
    message = str(info.value)
    assert message.startswith(
        "kernel build failed: init/version.c:10:2: error: #error reprolab test: broken on purpose"
    )
    assert "\n" not in message
    assert "broken on purpose" in (art / "build.log").read_text()


@pytest.mark.vm
def test_buddy_detector_catches_lkdtm_hardlockup_under_tcg(
    small: KernelArtifacts, tmp_path: Path
) -> None:
    case = CaseSpec.from_marker(
        "it::kernel-build::hardlockup-buddy",
        {
            "kernel": SMALL,
            "guest": {"vcpus": 2, "memory": "512M", "image": "minimal"},
            # watchdog_thresh=2 reports the lockup in seconds; the RCU stall timeout moves
            # past it, else a loaded TCG host lets RCU's 21 s report come first (CI saw
            # "rcu detected stall" win). The LKDTM scenario sets the same pair.
            "cmdline": {"nmi_watchdog": "panic", "watchdog_thresh": 2,
                        "rcupdate.rcu_cpu_stall_timeout": 60},
            "expect": {"kind": "hard-lockup", "in_stack": "lkdtm_HARDLOCKUP"},
            # drgn opens the dump directly below: the raw form (a compressed kdump is
            # converted first, which test_core_boot covers).
            "dump": "elf",
        },
    )
    seen: dict[str, str] = {}

    def body(guest: Guest) -> None:
        seen["release"] = guest.sh("uname -r")
        seen["nmi_watchdog"] = guest.sh("cat /proc/sys/kernel/nmi_watchdog")
        seen["triggers"] = guest.sh(
            "mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; "
            "cat /sys/kernel/debug/provoke-crash/DIRECT"
        )
        guest.console.send("echo HARDLOCKUP > /sys/kernel/debug/provoke-crash/DIRECT")
        guest.wait(180)

    session = Session(uri="qemu:///system", artifacts=tmp_path / "artifacts")
    try:
        result, err = session.run_attempt(case, 1, body)
    finally:
        session.close()
    assert err is None, err
    assert small.release in seen["release"]
    assert seen["nmi_watchdog"].strip().endswith("1")  # a hard-lockup detector is running
    for trigger in ("HARDLOCKUP", "SOFTLOCKUP", "HUNG_TASK", "PANIC"):
        assert trigger in seen["triggers"].split()
    assert result.outcome is Outcome.REPRODUCED, result
    assert result.kind == "hard-lockup"
    console = (result.directory / "console.log").read_text(errors="replace")
    assert "watchdog: Watchdog detected hard LOCKUP on cpu" in console
    assert "Kernel panic - not syncing: Hard LOCKUP" in console
    assert result.vmcore is not None and small.vmlinux is not None
    prog = drgn.Program()
    prog.set_core_dump(str(result.vmcore))
    prog.load_debug_info([str(small.vmlinux)])
    assert prog["UTS_RELEASE"].string_().decode() == small.release
    frames = [f.name for f in prog.crashed_thread().stack_trace()]
    assert "watchdog_hardlockup_check" in frames
