"""Is a function an expectation names really in the kernel that will run?

``in_stack="svm_hardware_enable"`` can never match on 6.12 (the function became
``svm_enable_virtualization_cpu``), and ``kvm_cpu_vmxon`` never shows in a Debian 6.1 stack
(it is inlined into ``vmx_hardware_enable``). Such a case runs for hours and reports "not
reproduced". So before the first attempt every named function is looked up in that kernel's
symbols: its System.map (the -dbg one for Debian: /boot's is a placeholder) or ``nm`` of its
vmlinux, then the modules it ships (``nm`` on .ko, .ko.xz, .ko.zst). A function found only in
debug info (.debug_str) exists only inlined.
"""

from __future__ import annotations

import difflib
import functools
import lzma
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from reprolab.errors import InfraError, UserError
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.proc import run

#: A System.map with fewer lines is Debian's placeholder ("The real System.map is in the
#: linux-image-<version>-dbg package").
_MIN_MAP_LINES = 1000
_TEXT_TYPES = frozenset("tTwW")
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst")
_CLOSE_CUTOFF = 0.6


def parse_map(text: str) -> frozenset[str]:
    """Function names of System.map / ``nm`` output ("ADDR TYPE NAME [module]")."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in _TEXT_TYPES:
            names.add(parts[2].split(".", 1)[0])  # f.cold, f.isra.0 and f.constprop are f
        elif len(parts) == 2 and parts[0] in _TEXT_TYPES:  # nm of an undefined-address file
            names.add(parts[1].split(".", 1)[0])
    return frozenset(names)


def _map_candidates(kernel: KernelArtifacts) -> list[Path]:
    out = []
    if kernel.vmlinux is not None:
        out.append(kernel.vmlinux.parent / "System.map")
        out.append(kernel.vmlinux.parent / f"System.map-{kernel.release}")
    out.append(kernel.image.parent / "System.map")
    out.append(Path("/usr/lib/debug/boot") / f"System.map-{kernel.release}")
    out.append(Path("/boot") / f"System.map-{kernel.release}")
    return out


@functools.lru_cache(maxsize=8)
def core_symbols(kernel: KernelArtifacts) -> tuple[frozenset[str], str] | None:
    """(function names of the core kernel, where they were read), or None when unknown."""
    for path in _map_candidates(kernel):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if text.count("\n") >= _MIN_MAP_LINES:
            return parse_map(text), str(path)
    if kernel.vmlinux is not None and kernel.vmlinux.is_file():
        done = run(["nm", str(kernel.vmlinux)], check=False, timeout=300)
        if done.ok:
            return parse_map(done.stdout), str(kernel.vmlinux)
    return None


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="reprolab-ko-") as tmp:
            out = Path(tmp) / "m.ko"
            run(["zstd", "-q", "-d", "-f", str(path), "-o", str(out)], timeout=60)
            return out.read_bytes()
    return data


def _modules(kernel: KernelArtifacts) -> Iterator[Path]:
    root = kernel.modules_dir
    if root.is_dir():
        for path in sorted(root.rglob("*.ko*")):
            if path.name.endswith(_MODULE_SUFFIXES):
                yield path


def _module_functions(path: Path, data: bytes) -> frozenset[str]:
    """``nm`` of one module (decompressed to a temporary file when needed)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".ko") as tmp:
        tmp.write(data)
        tmp.flush()
        done = run(["nm", tmp.name], check=False, timeout=60)
    return parse_map(done.stdout) if done.ok else frozenset()


def _modules_with(kernel: KernelArtifacts, needle: bytes) -> Iterator[tuple[Path, bytes]]:
    for path in _modules(kernel):
        try:
            data = _read_module(path)
        except (OSError, lzma.LZMAError, InfraError):
            continue
        if needle in data:
            yield path, data


def in_debug_info(kernel: KernelArtifacts, name: str) -> bool:
    """Does the name appear in the kernel's or its debug modules' DWARF strings?"""
    needle = b"\0" + name.encode() + b"\0"
    files: list[Path] = []
    if kernel.vmlinux is not None and kernel.vmlinux.is_file():
        files.append(kernel.vmlinux)
    dbg = Path("/usr/lib/debug/lib/modules") / kernel.release
    if dbg.is_dir():
        files.extend(p for p in dbg.rglob("*.ko") if p.is_file())
    for path in files:
        import mmap

        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(needle) >= 0:
                return True
    return False


def check_functions(kernel: KernelArtifacts, names: Iterable[str], *, where: str) -> None:
    """Raise :class:`UserError` for the first name that is no function of ``kernel``."""
    wanted = [n for n in dict.fromkeys(names) if n]
    if not wanted:
        return
    core = core_symbols(kernel)
    if core is None:
        return  # nothing to check against: the kernel's symbols are unknown here
    functions, source = core
    for name in wanted:
        if name in functions:
            continue
        needle = b"\0" + name.encode() + b"\0"
        if any(name in _module_functions(p, d) for p, d in _modules_with(kernel, needle)):
            continue
        raise UserError(_missing(kernel, name, functions, source, where=where))


def _missing(kernel: KernelArtifacts, name: str, functions: frozenset[str], source: str,
             *, where: str) -> str:
    # Candidates from modules sharing the name's first two words ("svm_enable_"): a scan
    # of every module for a common prefix like "kvm_" costs more than it suggests.
    prefix = ("_".join(re.split(r"_+", name.strip("_"))[:2]) + "_").encode()
    pool = set(functions)
    for path, data in _modules_with(kernel, prefix):
        pool |= _module_functions(path, data)
    close = difflib.get_close_matches(name, sorted(pool), n=1, cutoff=_CLOSE_CUTOFF)
    how = ("exists only inlined (named in debug info, no symbol: never a frame of its own)"
           if in_debug_info(kernel, name) else "does not exist")
    hint = f"; closest existing function: {close[0]}" if close else ""
    return (f"{where}: function {name!r} {how} in kernel {kernel.release} (symbols: {source} "
            f"and its modules){hint}")
