"""Assembling a root filesystem tree from host files and packing it as a newc cpio archive.

The tree is laid out merged-/usr (``/bin -> usr/bin`` ...) like the Debian host it is copied
from, so paths from ``dpkg -L`` and from ``ldd`` land where the programs expect them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from reprolab.errors import UserError
from reprolab.image import closure, guestinit, kmods
from reprolab.image.recipe import FileSpec, ImageRecipe
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.proc import run

BUSYBOX = Path("/bin/busybox")
_MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
_DIRS = (
    "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "proc", "sys", "dev",
    "run", "tmp", "root", "etc/reprolab", "etc/dropbear", "var/log", "mnt", "newroot",
)
_ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/group": "root:x:0:\ntty:x:5:\n",
    "etc/shells": "/bin/sh\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "etc/hosts": "127.0.0.1 localhost reprolab\n10.0.2.2 host\n",
    "etc/hostname": "reprolab\n",
}

#: Modules the disk loader needs to reach root=/dev/vda on ext4.
LOADER_MODULES = ("virtio_pci", "virtio_blk", "ext4")
LOADER_OPTIONAL = ("crc32c_generic",)
#: Modules an SSH guest needs whatever the recipe says (network device, fw_cfg for the key).
SSH_MODULES = ("virtio_pci", "virtio_net", "qemu_fw_cfg")


class Tree:
    """A staging root and the host files copied into it."""

    def __init__(self, root: Path, *, fresh: bool = True) -> None:
        """``fresh`` lays out an empty merged-/usr tree; False wraps an existing root."""
        self.root = root
        if not fresh:
            return
        for d in _DIRS:
            (root / d).mkdir(parents=True, exist_ok=True)
        for link, target in _MERGED.items():
            (root / link).symlink_to(target)
        (root / "tmp").chmod(0o1777)
        (root / "root").chmod(0o700)

    def dest(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def copy_host(self, path: str) -> bool:
        """Copy a host file (symlinks followed) to the same path; False if already there."""
        target = self.dest(path)
        if target.exists() or target.is_symlink():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(path).resolve(), target)
        return True

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.dest(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def add_binary(self, path: str, *, where: str) -> None:
        """A host executable and, for ELF files, every library it loads."""
        self.copy_host(path)
        if closure.is_elf(Path(path)):
            for lib in closure.library_closure(Path(path), where=where):
                self.copy_host(lib)

    def add_busybox(self) -> None:
        """busybox plus a link for each applet no real program already provides."""
        if not BUSYBOX.exists():
            raise UserError(f"{BUSYBOX} missing: apt-get install busybox-static")
        self.copy_host(str(BUSYBOX))
        applets = run([BUSYBOX, "--list-full"]).stdout.split()
        for applet in applets:
            target = self.dest("/" + applet)
            if target.exists() or target.is_symlink():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to("/bin/busybox")

    def add_files(self, recipe: ImageRecipe, build_dir: Path) -> None:
        for spec in recipe.files:
            self.write_spec(spec, recipe, build_dir)

    def write_spec(self, spec: FileSpec, recipe: ImageRecipe, build_dir: Path) -> None:
        target = self.dest(spec.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if spec.content is not None:
            target.write_text(spec.content)
        elif spec.source is not None:
            shutil.copyfile(spec.source, target)
        elif spec.compile is not None:
            out = build_dir / (spec.compile.stem + ".bin")
            run(
                ["gcc", "-static", "-O2", "-Wall", "-o", out, spec.compile],
                timeout=300,
                error=UserError,
            )
            shutil.copyfile(out, target)
        target.chmod(spec.mode)


def add_packages(tree: Tree, recipe: ImageRecipe) -> list[str]:
    """Copy every program of the recipe's packages; returns the scripts left out."""
    skipped: list[str] = []
    for prog in closure.package_programs(recipe):
        host = Path(prog.path)
        if closure.is_elf(host.resolve()):
            tree.add_binary(prog.path, where=recipe.where("packages", prog.package))
            continue
        interp = closure.interpreter_of(host.resolve())
        if interp in ("/bin/sh", "/usr/bin/sh"):
            tree.copy_host(prog.path)
        else:
            # perl/python/bash scripts would need their interpreter's whole world.
            skipped.append(prog.path)
    return skipped


def build_initramfs_tree(
    tree: Tree, recipe: ImageRecipe, kernel: KernelArtifacts, build_dir: Path,
    host_key: Path | None,
) -> list[str]:
    """Fill ``tree`` for an initramfs guest; returns notes for the build log."""
    closure.package_versions(recipe)  # unknown / missing packages fail here, with a line
    skipped = add_packages(tree, recipe)
    tree.add_busybox()
    extra = SSH_MODULES if recipe.ssh else ()
    mods = kmods.resolve(kernel, (*recipe.modules, *extra), recipe=recipe)
    kmods.install(mods, kernel, tree.root)
    for path, text in _ETC.items():
        tree.write(path, text)
    tree.write("etc/inittab", guestinit.INITTAB)
    tree.write("etc/profile", guestinit.PROFILE)
    tree.write("etc/reprolab/rc", guestinit.initramfs_rc(recipe, mods.load), 0o755)
    tree.write(guestinit.CONSOLE_SHELL_PATH.lstrip("/"), guestinit.CONSOLE_SHELL, 0o755)
    init = tree.dest("/init")
    init.symlink_to("/bin/busybox")
    if recipe.ssh:
        if not tree.dest("/usr/sbin/dropbear").exists():
            raise UserError(
                f"{recipe.where('ssh')}: ssh: true needs dropbear in the image "
                "(add dropbear-bin to packages)"
            )
        assert host_key is not None
        shutil.copyfile(host_key, tree.dest(guestinit.DROPBEAR_KEY))
        tree.dest(guestinit.DROPBEAR_KEY).chmod(0o600)
    tree.add_files(recipe, build_dir)
    notes = [f"modules loaded: {' '.join(mods.load)}", f"built in: {' '.join(mods.builtin)}"]
    if skipped:
        notes.append(f"scripts left out (interpreter not in image): {' '.join(skipped)}")
    return notes


def build_loader_tree(tree: Tree, kernel: KernelArtifacts) -> None:
    """The disk image's loader: busybox + root-disk modules + a switch_root /init."""
    tree.add_busybox()
    mods = kmods.resolve(kernel, LOADER_MODULES, optional=LOADER_OPTIONAL)
    kmods.install(mods, kernel, tree.root)
    tree.write("init", guestinit.loader_init(mods.load), 0o755)


def _walk(root: Path) -> Iterable[str]:
    """Relative paths, parents before children, sorted for a reproducible archive."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            out.append(rel)
        out.extend(
            os.path.join(rel, f) if rel != "." else f for f in sorted(filenames)
        )
        # os.walk does not descend into symlinked dirs but lists them among dirnames.
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                out.append(os.path.join(rel, d) if rel != "." else d)
                dirnames.remove(d)
    return out


def pack(root: Path, dest: Path, *, compress: bool = True) -> None:
    """newc cpio of ``root`` (owner root:root), optionally gzip'd, written atomically."""
    raw = dest.with_name(dest.name + ".cpio.tmp")
    listing = "\n".join(_walk(root)) + "\n"
    run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible", "-F", raw],
        cwd=root,
        stdin=listing,
        timeout=300,
    )
    tmp = dest.with_name(dest.name + ".tmp")
    if compress:
        with raw.open("rb") as src, gzip.open(tmp, "wb", compresslevel=1) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        raw.unlink()
    else:
        raw.rename(tmp)
    tmp.chmod(0o644)
    tmp.rename(dest)
