"""Exact replays: the kernel and initrd an attempt booted, named by what they are.

A replay that rebuilds its kernel boots another binary (another build ID: the original
vmlinux no longer reads the new dump) and costs minutes. So a bundle records the kernel by
cache key, bzImage sha256 and vmlinux build ID, and the initrd by sha256; a replay takes the
cached files when they are still those bytes, and rebuilds only when they are gone, saying so.
The bundle's own location is in none of this, so a copied bundle finds the same cache entry.

A portable bundle carries the files themselves. They are installed under names derived from
their own hashes (``kernels/bundle-<sha>``, ``images/bundle-<sha>``), never under the build
cache key the manifest claims: a bundle is untrusted, and a forged key must not plant a
kernel that later ordinary builds would take from the cache.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from reprolab.bundle import Bundle, file_hash
from reprolab.errors import UserError
from reprolab.image.build import GuestImage
from reprolab.kernel.artifacts import KernelArtifacts

_KERNEL_KEY = re.compile(r"^(build-\d+\.\d+-[0-9a-f]{20}|stock-[0-9A-Za-z._+~-]+-[0-9a-f]{16})$")
_RELEASE = re.compile(r"^[0-9A-Za-z._+~-]{1,100}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{16,128}$")
Say = Callable[[str], None]


def build_id(kernel: KernelArtifacts) -> str | None:
    """The GNU build ID of the kernel's vmlinux (what a vmcore's VMCOREINFO also names)."""
    from reprolab.kernel.elf import elf_build_id

    if kernel.vmlinux is None or not kernel.vmlinux.is_file():
        return None
    return elf_build_id(kernel.vmlinux)


def artifacts_record(kernel: KernelArtifacts, image: GuestImage) -> dict[str, Any]:
    """The manifest's ``artifacts``: what exactly booted, by content."""
    config = kernel.config if kernel.config is not None and kernel.config.is_file() else None
    image_data = asdict(image)
    for name in ("initrd", "disk", "cached", "build_seconds"):
        image_data.pop(name)
    image_data["cmdline"] = list(image.cmdline)
    image_data["initrd_sha256"] = (file_hash(image.initrd)
                                   if image.initrd is not None and image.initrd.is_file() else None)
    image_data["has_disk"] = image.disk is not None
    return {
        "kernel": {
            "key": kernel.key,
            "origin": kernel.origin,
            "release": kernel.release,
            "image_sha256": file_hash(kernel.image),
            "build_id": build_id(kernel),
            "config_sha256": file_hash(config) if config is not None else None,
        },
        "image": image_data,
    }


def carry_files(kernel: KernelArtifacts, image: GuestImage) -> dict[str, Path]:
    """What a portable bundle copies in: kernel, vmlinux, .config and initrd, where they exist.

    A disk image's qcow2 is not carried (hundreds of MB); its replay rebuilds the disk.
    """
    files = {"bzImage": kernel.image}
    for name, path in (("vmlinux", kernel.vmlinux), ("config", kernel.config),
                       ("initrd", image.initrd)):
        if path is not None and path.is_file():
            files[name] = path
    return files


@dataclass(frozen=True)
class Exact:
    """What a replay boots: the bundle's own kernel and image, or None for "build it"."""

    kernel: KernelArtifacts | None
    image: GuestImage | None
    #: The build ID the bundle recorded, and how the kernel was found.
    recorded_build_id: str | None
    how: str
    notes: tuple[str, ...] = field(default=())

    @property
    def rebuild(self) -> bool:
        return self.kernel is None


class _Record:
    """Typed access to ``artifacts`` in a manifest, errors naming the key."""

    def __init__(self, bundle: Bundle, section: str) -> None:
        self.bundle = bundle
        self.section = section
        raw = bundle.artifacts.get(section, {})
        if not isinstance(raw, dict):
            raise self.fail("", "must be an object")
        self.data: Mapping[str, Any] = raw

    def fail(self, key: str, what: str) -> UserError:
        name = f"artifacts.{self.section}" + (f".{key}" if key else "")
        return UserError(f"bundle {self.bundle.directory}: field {name!r} {what}")

    def get(self, key: str, pattern: re.Pattern[str] | None = None, *,
            required: bool = True) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is missing")
            return None
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise self.fail(key, f"is {value!r}, not a valid value")
        return value


_SHA = re.compile(r"^sha256:[0-9a-f]{64}$")


def _matches(kernel: KernelArtifacts, image_sha: str, build: str | None) -> bool:
    if not kernel.image.is_file() or file_hash(kernel.image) != image_sha:
        return False
    return build is None or build_id(kernel) == build


def find_exact(bundle: Bundle, say: Say) -> Exact:
    """The bundle's kernel and initrd from the cache (or carried), verified by content."""
    if not bundle.artifacts:
        return Exact(None, None, None, "the bundle names no kernel by content (written by an "
                     "older reprolab)")
    rec = _Record(bundle, "kernel")
    key = rec.get("key", _KERNEL_KEY)
    origin = rec.get("origin", re.compile(r"^(stock|build)$"))
    release = rec.get("release", _RELEASE)
    image_sha = rec.get("image_sha256", _SHA)
    build = rec.get("build_id", _HEX, required=False)
    assert key is not None and origin is not None and release is not None
    assert image_sha is not None
    kernel, how = _cached_kernel(key, origin, image_sha, build)
    if kernel is None and "bzImage" in bundle.carried:
        kernel, how = _install_kernel(bundle, origin, release, image_sha, build), \
            "installed from the portable bundle"
    if kernel is None:
        return Exact(None, None, build, how)
    say(f"kernel: {how}: {kernel.key}" + (f", build ID {build}" if build else ""))
    image, image_how = _image(bundle, kernel)
    say(f"initrd: {image_how}")
    return Exact(kernel, image, build, how, notes=(f"kernel {how}", f"initrd {image_how}"))


def _cached_kernel(key: str, origin: str, image_sha: str, build: str | None
                   ) -> tuple[KernelArtifacts | None, str]:
    from reprolab.kernel.build import _load, kernels_dir

    if origin == "stock":
        from reprolab.kernel.artifacts import stock_kernel

        try:
            stock = stock_kernel()
        except UserError as exc:
            return None, f"no stock kernel on this host ({exc})"
        if stock.key == key and _matches(stock, image_sha, None):
            return stock, "reused the host's stock kernel (same bzImage sha256)"
        return None, f"this host's stock kernel is {stock.key}, not the bundle's {key}"
    entry = kernels_dir() / key
    cached = _load(entry)
    if cached is None:
        return None, f"kernel {key} is not in this host's cache"
    if not _matches(cached, image_sha, build):
        return None, (f"cache entry {key} holds another kernel than the bundle's "
                      f"(bzImage sha256 or build ID differ)")
    return cached, "reused from the cache (same bzImage sha256 and build ID)"


def _install_kernel(bundle: Bundle, origin: str, release: str, image_sha: str,
                    build: str | None) -> KernelArtifacts:
    from reprolab.kernel.build import kernels_dir

    carried = bundle.carried
    if file_hash(carried["bzImage"]) != image_sha:
        raise UserError(f"bundle {bundle.directory}: field 'carried.bzImage' is not the kernel "
                        "'artifacts.kernel.image_sha256' names")
    entry = kernels_dir() / f"bundle-{image_sha.removeprefix('sha256:')[:20]}"
    with FileLock(str(entry) + ".lock"):
        meta = entry / "meta.json"
        if not meta.is_file():
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(mode=0o755)
            for name in ("bzImage", "vmlinux", "config"):
                if name in carried:
                    shutil.copyfile(carried[name], entry / name)
                    (entry / name).chmod(0o644)
            (entry / "modroot" / "lib" / "modules" / release).mkdir(parents=True)
            meta.write_text(json.dumps({"release": release, "origin": origin,
                                        "installed_from": str(bundle.directory)}) + "\n")
    kernel = KernelArtifacts(
        image=entry / "bzImage", release=release, modules_root=entry / "modroot",
        config=entry / "config" if (entry / "config").is_file() else None,
        vmlinux=entry / "vmlinux" if (entry / "vmlinux").is_file() else None,
        key=entry.name, origin=origin)
    if not _matches(kernel, image_sha, build):
        raise UserError(f"bundle {bundle.directory}: field 'carried.vmlinux' does not have "
                        f"the build ID 'artifacts.kernel.build_id' names ({build})")
    return kernel


def _image(bundle: Bundle, kernel: KernelArtifacts) -> tuple[GuestImage | None, str]:
    """The bundle's initrd: the cached image when its initrd is the same bytes, or the one
    the portable bundle carries. None lets the session build the image (and says so)."""
    from reprolab.image.build import _load_meta, images_cache

    rec = _Record(bundle, "image")
    if not rec.data:
        return None, "not named by the bundle: built for this replay"
    recipe = rec.get("recipe", _NAME)
    key = rec.get("key", re.compile(r"^[0-9a-f]{64}$"))
    initrd_sha = rec.get("initrd_sha256", _SHA, required=False)
    assert recipe is not None and key is not None
    entry = images_cache() / f"{recipe}-{key[:16]}"
    if (entry / "image.json").is_file():
        cached = _load_meta(entry, cached=True)
        if cached.initrd is not None and initrd_sha is not None and \
                cached.initrd.is_file() and file_hash(cached.initrd) == initrd_sha and \
                (cached.disk is None or cached.disk.is_file()):
            return cached, f"reused {entry.name} from the cache (same sha256)"
    if "initrd" in bundle.carried and rec.data.get("kind") == "initramfs":
        return _install_image(bundle, rec, initrd_sha), "installed from the portable bundle"
    return None, "not in this host's cache: rebuilt for this replay (another initrd)"


def _install_image(bundle: Bundle, rec: _Record, initrd_sha: str | None) -> GuestImage:
    from reprolab.image.build import images_cache, restrict

    carried = bundle.carried["initrd"]
    if initrd_sha is None or file_hash(carried) != initrd_sha:
        raise UserError(f"bundle {bundle.directory}: field 'carried.initrd' is not the initrd "
                        "'artifacts.image.initrd_sha256' names")
    cmdline = rec.data.get("cmdline", [])
    if not isinstance(cmdline, list) or not all(isinstance(c, str) for c in cmdline):
        raise rec.fail("cmdline", "must be a list of strings")
    host_key = rec.get("host_key", re.compile(r"^ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+$"),
                       required=False)
    marker = rec.get("ready_marker")
    has_ssh = rec.data.get("has_ssh")
    if not isinstance(has_ssh, bool):
        raise rec.fail("has_ssh", "must be true or false")
    shell_at_ready = rec.data.get("shell_at_ready", False)  # absent: a bundle from before it
    if not isinstance(shell_at_ready, bool):
        raise rec.fail("shell_at_ready", "must be true or false")
    entry = images_cache() / f"bundle-{initrd_sha.removeprefix('sha256:')[:20]}"
    with FileLock(str(entry) + ".lock"):
        if not (entry / "initrd.img").is_file() or file_hash(entry / "initrd.img") != initrd_sha:
            entry.mkdir(mode=0o700, exist_ok=True)
            shutil.copyfile(carried, entry / "initrd.img")
        restrict(entry)  # it holds the guest's SSH host private key
    return GuestImage(
        recipe=str(rec.get("recipe", _NAME)), kind="initramfs", initrd=entry / "initrd.img",
        disk=None, cmdline=tuple(cmdline), ready_marker=str(marker), host_key=host_key,
        has_ssh=has_ssh, key=str(rec.get("key")), shell_at_ready=shell_at_ready, cached=True)


def compare_signature(original: Mapping[str, Any], signature: str | None) -> tuple[bool | None,
                                                                                     str]:
    """Whether the replay showed the original's signature, and the line saying so."""
    if not original or "signature" not in original:
        return None, "the bundle records no original verdict to compare with"
    was = original.get("signature")
    if was == signature:
        return True, f"signature matches the original ({was})"
    return False, f"signature differs: original {was}, replay {signature}"
