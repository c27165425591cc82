"""Building guest images, cached by content hash and built once across parallel workers.

The key covers everything that changes the bytes of an image: the recipe's fields and the
files it references, the installed versions of its packages (initramfs images are copied
from the host), the kernel (its modules go in), and the builder's own source. A
:class:`filelock.FileLock` per key makes concurrent ``pytest -n`` workers wait for the one
that builds; a build is assembled in a scratch directory and renamed into place, so a crash
mid-build leaves no half image that a later run would take for a cache hit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from reprolab.errors import InfraError, UserError
from reprolab.image import closure, disk, guestinit, initramfs, kmods
from reprolab.image.hostkey import generate_host_key
from reprolab.image.recipe import ImageRecipe, load_recipe
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.modes import qemu_only
from reprolab.paths import cache_root

_META = "image.json"


@dataclass(frozen=True)
class GuestImage:
    #: Recipe name.
    recipe: str
    kind: str
    #: initramfs to boot (the whole guest, or a disk image's loader).
    initrd: Path | None
    #: Read-only qcow2 base of a disk image; runs boot an overlay from :func:`make_overlay`.
    disk: Path | None
    #: Extra kernel arguments the image needs.
    cmdline: tuple[str, ...]
    ready_marker: str
    #: Pinned public host key line (``ssh-ed25519 AAAA...``).
    host_key: str | None
    has_ssh: bool
    #: Content hash.
    key: str
    #: The console shell prints the ready marker as it starts (guestinit.CONSOLE_SHELL), so
    #: the first line typed after it needs no probe; False where another process prints it
    #: (a disk image's unit, an initrd built before the shell did).
    shell_at_ready: bool = False
    #: Seconds the original build took; ``cached`` says whether this call built it.
    build_seconds: float = 0.0
    cached: bool = False


def images_cache() -> Path:
    path = cache_root() / "images"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.cache
def _builder_digest() -> str:
    """Hash of the builder's source as loaded by this process (a changed builder rebuilds)."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for src in sorted(here.glob("*.py")):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    return h.hexdigest()


def image_key(recipe: ImageRecipe, kernel: KernelArtifacts) -> str:
    """Content hash of an image; computing it fails early on unknown/missing packages."""
    fields = asdict(recipe)
    fields.pop("lines", None)
    fields.pop("path", None)
    fields["files"] = [
        {
            "path": f.path, "mode": f.mode, "content": f.content,
            "source": f.source and _file_digest(f.source),
            "compile": f.compile and _file_digest(f.compile),
        }
        for f in recipe.files
    ]
    fields["disk"] = asdict(recipe.disk)
    parts: dict[str, object] = {
        "recipe": fields,
        "kernel": [kernel.key, kernel.release],
        "modules.dep": _file_digest(kernel.modules_dir / "modules.dep")
        if (kernel.modules_dir / "modules.dep").exists() else None,
        "builder": _builder_digest(),
        "busybox": _file_digest(initramfs.BUSYBOX) if initramfs.BUSYBOX.exists() else None,
    }
    if recipe.kind == "initramfs":
        parts["packages"] = closure.package_versions(recipe)
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def validate(recipe: ImageRecipe, kernel: KernelArtifacts) -> None:
    """Cheap checks that name the recipe line, before any lock is taken or download made."""
    kmods.resolve(kernel, recipe.modules, recipe=recipe)
    if recipe.kind == "disk" and recipe.disk.suite == closure.host_codename():
        closure.check_known(recipe)


def build_image(recipe: ImageRecipe | str, kernel: KernelArtifacts) -> GuestImage:
    """The image for ``recipe`` with ``kernel``'s modules, from cache or built now."""
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    validate(rec, kernel)
    key = image_key(rec, kernel)
    final = images_cache() / f"{rec.name}-{key[:16]}"
    with FileLock(str(final) + ".lock"):
        if (final / _META).is_file():
            restrict(final)  # entries made before images were kept private
            return _load_meta(final, cached=True)
        scratch = final.with_name(f"{final.name}.build-{os.getpid()}")
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        start = time.monotonic()
        try:
            image = _build(rec, kernel, key, scratch, final)
        except BaseException:
            _keep_failed_log(scratch, final)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        image = GuestImage(**{**asdict(image), "build_seconds": time.monotonic() - start})
        _write_meta(scratch, image)
        _cleanup(scratch)
        restrict(scratch)
        if final.exists():
            shutil.rmtree(final)
        scratch.rename(final)
        return image


def restrict(entry: Path) -> None:
    """The image holds the guest's SSH host private key: QEMU may read it, other local
    users may not (see :mod:`reprolab.modes`); the key files themselves are root's only."""
    qemu_only(entry)
    for name in ("initrd.img", "disk.qcow2"):
        if (entry / name).is_file():
            qemu_only(entry / name)
    keys = entry / "hostkey"
    if keys.is_dir():
        keys.chmod(0o700)
        for key in keys.iterdir():
            key.chmod(0o600)


def _build(
    rec: ImageRecipe, kernel: KernelArtifacts, key: str, scratch: Path, final: Path
) -> GuestImage:
    host = generate_host_key(scratch / "hostkey") if rec.ssh else None
    log = scratch / "build.log"
    initrd = final / "initrd.img"
    if rec.kind == "initramfs":
        tree = initramfs.Tree(scratch / "root")
        notes = initramfs.build_initramfs_tree(
            tree, rec, kernel, scratch, host.dropbear if host else None
        )
        log.write_text("\n".join(notes) + "\n")
        initramfs.pack(tree.root, scratch / "initrd.img")
        return GuestImage(
            recipe=rec.name, kind="initramfs", initrd=initrd, disk=None, cmdline=(),
            ready_marker=guestinit.READY_MARKER, host_key=host.public if host else None,
            has_ssh=rec.ssh, key=key, shell_at_ready=True,
        )
    loader = initramfs.Tree(scratch / "loader")
    initramfs.build_loader_tree(loader, kernel)
    initramfs.pack(loader.root, scratch / "initrd.img")
    rootfs = scratch / "rootfs"
    disk.debootstrap(rec, rootfs, log)
    disk.copy_modules(kernel, rootfs)
    disk.customize(rec, rootfs, scratch, host.dropbear if host else None)
    disk.make_disk(rootfs, scratch / "disk.qcow2", rec.disk.size, log)
    cmdline = ["root=/dev/vda", "rw", "net.ifnames=0"]
    if rec.cgroup_v1:
        cmdline.append("systemd.unified_cgroup_hierarchy=0")
    return GuestImage(
        recipe=rec.name, kind="disk", initrd=initrd, disk=final / "disk.qcow2",
        cmdline=tuple(cmdline), ready_marker=guestinit.READY_MARKER,
        host_key=host.public if host else None, has_ssh=rec.ssh, key=key,
    )


def _cleanup(scratch: Path) -> None:
    """Drop the staging trees; keep the image, the host key and the log."""
    for name in ("root", "loader", "rootfs"):
        shutil.rmtree(scratch / name, ignore_errors=True)
    for leftover in scratch.glob("*.bin"):
        leftover.unlink()


def _keep_failed_log(scratch: Path, final: Path) -> None:
    log = scratch / "build.log"
    if log.exists():
        shutil.copyfile(log, final.with_name(final.name + ".failed.log"))


def _write_meta(scratch: Path, image: GuestImage) -> None:
    data = asdict(image)
    for field in ("initrd", "disk"):
        data[field] = Path(data[field]).name if data[field] else None
    data["cmdline"] = list(image.cmdline)
    data.pop("cached")
    (scratch / _META).write_text(json.dumps(data, indent=2) + "\n")


def _load_meta(directory: Path, *, cached: bool) -> GuestImage:
    try:
        data = json.loads((directory / _META).read_text())
        return GuestImage(
            recipe=data["recipe"], kind=data["kind"],
            initrd=directory / data["initrd"] if data["initrd"] else None,
            disk=directory / data["disk"] if data["disk"] else None,
            cmdline=tuple(data["cmdline"]), ready_marker=data["ready_marker"],
            host_key=data["host_key"], has_ssh=data["has_ssh"], key=data["key"],
            shell_at_ready=data.get("shell_at_ready") is True,
            build_seconds=float(data.get("build_seconds", 0.0)), cached=cached,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InfraError(f"corrupt image cache entry {directory}: {exc}") from exc


def make_overlay(image: GuestImage, run_dir: Path) -> Path:
    """Per-run copy-on-write overlay of a disk image (the cached base is never written)."""
    if image.disk is None:
        raise UserError(f"image {image.recipe!r} is an initramfs; it has no disk to overlay")
    return disk.make_overlay_file(image.disk, run_dir, image.recipe)
