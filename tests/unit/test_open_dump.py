"""Finding a dump's vmlinux by build ID, and the commands that open the dump."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reprolab.kernel.debuginfo import find_vmlinux, stock_debug_info
from reprolab.triage.opendump import crash_support, crash_version, open_commands
from reprolab.triage.vmcore import elf_build_id

BUILD_ID = "0123456789abcdef0123456789abcdef01234567"


def _elf(path: Path, build_id: str) -> Path:
    """A real ELF with a GNU build-id note, linked by the host's toolchain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    src = path.with_suffix(".c")
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-o", str(path), str(src), f"-Wl,--build-id=0x{build_id}"],
                   check=True)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(root))
    return root


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to link an ELF")
def test_vmlinux_is_found_by_build_id_in_the_kernel_cache(cache: Path) -> None:
    other = _elf(cache / "kernels" / "build-6.12-aaaa" / "vmlinux", "ff" * 20)
    mine = _elf(cache / "kernels" / "build-6.12-bbbb" / "vmlinux", BUILD_ID)
    assert elf_build_id(mine) == BUILD_ID and elf_build_id(other) == "ff" * 20
    assert find_vmlinux(BUILD_ID) == mine
    assert find_vmlinux(BUILD_ID.upper()) == mine
    assert find_vmlinux(BUILD_ID[:24]) == mine  # VMCOREINFO may carry a prefix
    assert find_vmlinux("ab" * 20) is None
    assert find_vmlinux(None) is None and find_vmlinux("0123") is None  # too short to trust


def test_drgn_for_every_dump_crash_only_where_tested(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    core = tmp_path / "vmcore.elf"
    elf = open_commands(core, "elf", vmlinux, "6.1.0-57-amd64")
    assert elf["commands"][0].endswith(f"drgn -c {core} -s {vmlinux}")
    kdump = open_commands(tmp_path / "vmcore.kdump", "kdump-flattened", vmlinux, "6.12.48")
    converted = tmp_path / "vmcore.kdump.elf"
    assert kdump["commands"][:2] == [
        f"reprolab triage --vmcore {tmp_path / 'vmcore.kdump'} --elf {converted}",
        f"{kdump['commands'][1].split(' ')[0]} -c {converted} -s {vmlinux}"]
    assert not any(c.startswith("crash ") for c in kdump["commands"])
    if crash_support("6.1.0-57-amd64", crash_version())[0]:
        old = open_commands(tmp_path / "vmcore.kdump", "kdump-flattened", vmlinux, "6.1.0-57-amd64")
        assert old["commands"][-1] == f"crash {vmlinux} {tmp_path / 'vmcore.kdump'}"
    nothing = open_commands(core, "elf", None, "6.1.0-57-amd64")
    assert "-s " not in nothing["commands"][0]
    assert any("no vmlinux with this dump's build ID" in n for n in nothing["notes"])


def test_crash_support_rule() -> None:
    assert crash_support("6.1.0-57-amd64", "8.0.2")[0] is True
    ok, why = crash_support("6.12.48", "8.0.2")
    assert not ok and "kmem_cache_s_num" in why
    assert crash_support("6.1.0-57-amd64", "9.9.9") == (
        False, "crash 9.9.9 is untested on 6.1.0-57-amd64")
    assert crash_support("6.1.0", None) == (False, "crash is not installed")


def test_stock_debug_info_says_how_to_get_it() -> None:
    missing = stock_debug_info("0.0.0-none-amd64", sizes=False)
    assert not missing.present
    assert missing.advice == "apt-get install linux-image-0.0.0-none-amd64-dbg"
    assert missing.path == Path("/usr/lib/debug/boot/vmlinux-0.0.0-none-amd64")


def test_doctor_says_how_to_get_missing_stock_debug_info() -> None:
    from reprolab.doctor import debug_info_check

    check = debug_info_check("0.0.0-none-amd64")
    assert check.status == "warn"
    assert "get it with: apt-get install linux-image-0.0.0-none-amd64-dbg" in check.detail


def test_doctor_warns_of_a_console_socket_buffer_that_loses_bytes(tmp_path: Path) -> None:
    from reprolab.doctor import CONSOLE_SNDBUF, console_buffer_check

    knob = tmp_path / "wmem_default"
    knob.write_text("212992\n")
    low = console_buffer_check(knob)
    assert low.status == "warn"
    assert f"sysctl -w net.core.wmem_default={CONSOLE_SNDBUF}" in low.detail
    knob.write_text(f"{CONSOLE_SNDBUF}\n")
    assert console_buffer_check(knob).status == "ok"
    assert console_buffer_check(tmp_path / "missing").status == "warn"
