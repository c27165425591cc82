"""Expectations are checked against the symbols of the kernel that will run, before boot."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.kernel.symbols import check_functions, parse_map

MAP = """\
ffffffff81000000 T _stext
ffffffff81001000 t vmx_hardware_enable
ffffffff81002000 t svm_enable_virtualization_cpu
ffffffff81003000 t tg_unthrottle_up
ffffffff81003100 t tg_unthrottle_up.cold
ffffffff81004000 D some_data
"""


def _kernel(tmp_path: Path, text: str, release: str = "6.12.0-test") -> KernelArtifacts:
    (tmp_path / "boot").mkdir(exist_ok=True)
    image = tmp_path / "boot" / "bzImage"
    image.write_bytes(b"")
    # Pad past the placeholder check: a real map has thousands of lines.
    filler = "".join(f"ffffffff8200{i:04x} t filler_{i}\n" for i in range(1200))
    (tmp_path / "boot" / "System.map").write_text(text + filler)
    return KernelArtifacts(image=image, release=release, modules_root=tmp_path, config=None,
                           vmlinux=None, key=f"test-{release}-{tmp_path.name}", origin="build")


def test_map_parsing_keeps_functions_only() -> None:
    names = parse_map(MAP)
    assert {"vmx_hardware_enable", "tg_unthrottle_up", "_stext"} <= names
    assert "some_data" not in names
    assert "tg_unthrottle_up.cold" not in names


def test_missing_function_names_kernel_and_close_name(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, MAP)
    check_functions(kernel, ["tg_unthrottle_up", "vmx_hardware_enable"], where="case t")
    with pytest.raises(UserError) as info:
        check_functions(kernel, ["svm_enable_virtualisation_cpu"], where="case t")
    msg = str(info.value)
    assert "case t: function 'svm_enable_virtualisation_cpu' does not exist in kernel " \
           "6.12.0-test" in msg
    assert "closest existing function: svm_enable_virtualization_cpu" in msg


def test_functions_of_compressed_modules_count(tmp_path: Path) -> None:
    """A real module from the host's kernel, xz-compressed the way distributions ship it."""
    stock = stock_kernel()
    ko = next(iter(sorted(stock.modules_dir.rglob("kvm-amd.ko*"))), None)
    if ko is None:
        pytest.skip("the host kernel ships no kvm-amd module")
    kernel = _kernel(tmp_path, MAP, release="6.1.0-test")
    dest = kernel.modules_dir / "kernel" / "arch" / "x86" / "kvm" / "kvm-amd.ko.xz"
    dest.parent.mkdir(parents=True)
    data = ko.read_bytes()
    dest.write_bytes(lzma.compress(lzma.decompress(data) if ko.name.endswith(".xz") else data))
    check_functions(kernel, ["svm_hardware_enable"], where="case t")
    with pytest.raises(UserError, match="closest existing function: svm_hardware_enable"):
        check_functions(kernel, ["svm_hardware_enabled"], where="case t")


def test_stock_kernel_with_debug_symbols() -> None:
    """Debian's real maps: svm_hardware_enable (kvm-amd.ko) exists on 6.1, the 6.12 name
    does not, and kvm_cpu_vmxon is only inlined into vmx_hardware_enable."""
    kernel = stock_kernel()
    if not Path(f"/usr/lib/debug/boot/System.map-{kernel.release}").is_file():
        pytest.skip("linux-image-*-dbg is not installed: /boot's System.map is a placeholder")
    check_functions(kernel, ["svm_hardware_enable", "vmx_hardware_enable"], where="c")
    with pytest.raises(UserError, match=r"'kvm_cpu_vmxon' exists only inlined .* "
                       + kernel.release.replace(".", r"\.")):
        check_functions(kernel, ["kvm_cpu_vmxon"], where="c")


def test_small_612_kernel_from_the_cache() -> None:
    """The real map of the cached small 6.12 build: the SVM enable path was renamed."""
    from reprolab.paths import cache_root

    built = sorted((cache_root() / "kernels").glob("build-6.12-*/System.map"))
    if not built:
        pytest.skip("no small 6.12 kernel in the cache (reprolab build-kernel "
                    "build:linux-source-6.12)")
    d = built[0].parent
    kernel = KernelArtifacts(image=d / "bzImage", release="6.12-cached", modules_root=d,
                             config=None, vmlinux=None, key=f"cached-{d.name}", origin="build")
    check_functions(kernel, ["svm_enable_virtualization_cpu", "lkdtm_HARDLOCKUP"], where="c")
    with pytest.raises(UserError, match=r"'svm_hardware_enable' does not exist in kernel "
                                        r"6\.12-cached"):
        check_functions(kernel, ["svm_hardware_enable"], where="c")
