"""Kernel modules of the kernel under test, resolved through its ``modules.dep``.

The guest image carries only the modules a recipe asks for plus their dependencies, and a
fresh ``depmod`` over that subset, so ``modprobe`` in the guest works (busybox's reads the
text ``modules.dep``, kmod's the ``.bin`` indexes) and never points at a missing file.
Modules the kernel has built in are accepted and simply not copied: the same recipe serves
the stock Debian kernel (virtio as modules) and a custom build (virtio built in).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reprolab.errors import UserError
from reprolab.image.recipe import ImageRecipe
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.proc import run

#: Index files copied verbatim; depmod regenerates the rest for the subset.
_COPIED_INDEXES = ("modules.builtin", "modules.builtin.modinfo", "modules.order")


def module_name(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net`` (dashes normalised)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


@dataclass(frozen=True)
class ModuleSet:
    """What the guest gets: module files (relative to modules_dir) and names to load."""

    files: tuple[str, ...]
    load: tuple[str, ...]
    builtin: tuple[str, ...]


def _read_dep(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        raise UserError(
            f"{dep_file} missing: the kernel's modules are not installed (run depmod?)"
        )
    table: dict[str, tuple[str, list[str]]] = {}
    for line in dep_file.read_text().splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        table[module_name(path)] = (path, deps.split())
    return table


def _read_builtin(modules_dir: Path) -> set[str]:
    builtin = modules_dir / "modules.builtin"
    if not builtin.is_file():
        return set()
    return {module_name(line) for line in builtin.read_text().split()}


def resolve(
    kernel: KernelArtifacts,
    names: Sequence[str],
    *,
    recipe: ImageRecipe | None = None,
    optional: Sequence[str] = (),
) -> ModuleSet:
    """Modules ``names`` (with dependencies) from ``kernel``.

    Names the recipe asked for are reported against its line when unknown; others are the
    builder's own needs (virtio_blk, ext4 for a disk loader). ``optional`` ones (ext4's
    crc32c soft dependency) are taken only when the kernel has them as modules.
    """
    modules_dir = kernel.modules_dir
    table = _read_dep(modules_dir)
    wanted = (*names, *(m for m in optional if m in table))
    builtin = _read_builtin(modules_dir)
    files: list[str] = []
    load: list[str] = []
    seen_builtin: list[str] = []

    def add(path: str) -> None:
        if path not in files:
            files.append(path)

    for name in wanted:
        if name in builtin:
            seen_builtin.append(name)
            continue
        if name not in table:
            where = (
                recipe.where("modules", name)
                if recipe is not None and name in recipe.modules
                else "reprolab image builder"
            )
            raise UserError(
                f"{where}: unknown kernel module {name!r}: neither in {modules_dir}/modules.dep "
                f"nor built into kernel {kernel.release}"
            )
        path, deps = table[name]
        for dep in deps:
            add(dep)
        add(path)
        if name not in load:
            load.append(name)
    return ModuleSet(files=tuple(files), load=tuple(load), builtin=tuple(seen_builtin))


def install(modules: ModuleSet, kernel: KernelArtifacts, root: Path) -> None:
    """Copy the module files into ``root/lib/modules/<release>`` and run depmod on them."""
    src = kernel.modules_dir
    dest = root / "lib" / "modules" / kernel.release
    dest.mkdir(parents=True, exist_ok=True)
    for rel in modules.files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
    for name in _COPIED_INDEXES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    run(["depmod", "-b", root, kernel.release], timeout=120)
