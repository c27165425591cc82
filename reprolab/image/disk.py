"""Disk images: a Debian rootfs (mmdebstrap) with systemd, made into a qcow2 base.

For cases that need a real init system and a real reboot path. The base is built once per
content key and never written again: every run boots a qcow2 overlay backed by it
(:func:`make_overlay`). The kernel under test is booted directly, so its modules are copied
into the disk at build time (and the kernel's key is part of the image key).
"""

from __future__ import annotations

import hashlib
import json
import pwd
import shutil
from pathlib import Path

from filelock import FileLock

from reprolab.errors import InfraError
from reprolab.image import guestinit
from reprolab.image.initramfs import SSH_MODULES, Tree
from reprolab.image.recipe import ImageRecipe
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.proc import run

#: Module subtrees no guest on virtio hardware loads; leaving them out halves the disk.
_MODULE_EXCLUDES = (
    "kernel/drivers/gpu", "kernel/drivers/media", "kernel/drivers/net/wireless",
    "kernel/drivers/net/ethernet", "kernel/drivers/infiniband", "kernel/drivers/staging",
    "kernel/sound", "kernel/drivers/usb", "kernel/drivers/bluetooth", "kernel/net/wireless",
    "kernel/net/mac80211", "kernel/drivers/iio", "kernel/drivers/isdn", "kernel/drivers/hid",
    "kernel/drivers/input", "kernel/drivers/mtd", "kernel/drivers/scsi", "kernel/drivers/ata",
)
#: Timers and units that only cost boot time or disk writes in a throwaway guest.
_MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
           "e2scrub_reap.service", "systemd-timesyncd.service")
#: Older kernels under test cannot mount ext4 with these newer mke2fs defaults.
_EXT4_FEATURES = "^orphan_file,^metadata_csum_seed"
_DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*",
                  "/usr/share/info/*")


def _packages(recipe: ImageRecipe) -> list[str]:
    extra = ["udev", "systemd-sysv", *(["dropbear-bin"] if recipe.ssh else [])]
    return sorted(set(recipe.packages) | set(extra))


def debootstrap(recipe: ImageRecipe, rootfs: Path, log: Path) -> None:
    """Unpack the recipe's Debian rootfs into ``rootfs``.

    The mmdebstrap result is cached as a tarball keyed by suite, mirror and packages only,
    so a new kernel (which changes the image key) costs a copy of modules, not a download
    and install of a whole distribution.
    """
    argv: list[str | Path] = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
        f"--include={','.join(_packages(recipe))}",
    ]
    argv += [f"--dpkgopt=path-exclude={p}" for p in _DPKG_EXCLUDES]
    key = hashlib.sha256(
        json.dumps([argv, recipe.disk.suite, recipe.disk.mirror]).encode()
    ).hexdigest()[:16]
    tarball = rootfs.parent.parent / f"rootfs-{recipe.disk.suite}-{key}.tar"
    with FileLock(str(tarball) + ".lock"):
        if not tarball.exists():
            tmp = tarball.with_name(tarball.name + ".tmp")
            run([*argv, recipe.disk.suite, tmp, recipe.disk.mirror], timeout=1800, log=log)
            tmp.rename(tarball)
    rootfs.mkdir(parents=True, exist_ok=True)
    run(["tar", "-x", "-p", "--numeric-owner", "-f", tarball, "-C", rootfs], timeout=600, log=log)


def copy_modules(kernel: KernelArtifacts, rootfs: Path) -> None:
    dest = rootfs / "lib" / "modules" / kernel.release
    if dest.exists():
        shutil.rmtree(dest)
    src = kernel.modules_dir

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(src)
        if rel == Path("."):
            # build/source point at kernel headers or a source tree, not modules.
            return {n for n in names if n in ("build", "source")}
        return {n for n in names if str(rel / n) in _MODULE_EXCLUDES}

    shutil.copytree(src, dest, symlinks=False, ignore=ignore, ignore_dangling_symlinks=True)
    run(["depmod", "-b", rootfs, kernel.release], timeout=300)


def _enable(rootfs: Path, unit: str, target: str) -> None:
    wants = rootfs / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.is_symlink():
        src = f"/etc/systemd/system/{unit}"
        if not (rootfs / src.lstrip("/")).exists():
            src = f"/lib/systemd/system/{unit.split('@')[0]}@.service" if "@" in unit \
                else f"/lib/systemd/system/{unit}"
        link.symlink_to(src)


def customize(recipe: ImageRecipe, rootfs: Path, build_dir: Path, host_key: Path | None) -> None:
    """Configure the rootfs the way the initramfs init does, but as systemd units."""
    tree = Tree(rootfs, fresh=False)
    tree.write("etc/hostname", "reprolab\n")
    tree.write("etc/hosts", "127.0.0.1 localhost reprolab\n10.0.2.2 host\n")
    tree.write("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    mods = list(dict.fromkeys([*recipe.modules, *(SSH_MODULES if recipe.ssh else ())]))
    tree.write("etc/modules-load.d/reprolab.conf", "\n".join(mods) + "\n")
    tree.write(
        "etc/sysctl.d/90-reprolab.conf", "".join(f"{k} = {v}\n" for k, v in recipe.sysctls)
    )
    tree.write("etc/reprolab/setup", guestinit.disk_setup(recipe), 0o755)
    # Bracketed-paste escapes around every prompt only confuse whoever drives the console.
    tree.write("root/.inputrc", "set enable-bracketed-paste off\n")
    for unit, text in guestinit.DISK_UNITS.items():
        if unit.startswith("dropbear") and not recipe.ssh:
            continue
        tree.write(f"etc/systemd/system/{unit}", text)
        _enable(rootfs, unit, "multi-user.target")
    tree.write(
        "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf",
        guestinit.SERIAL_AUTOLOGIN,
    )
    _enable(rootfs, "serial-getty@ttyS0.service", "getty.target")
    for unit in _MASKED:
        link = rootfs / "etc/systemd/system" / unit
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
    if recipe.ssh:
        assert host_key is not None
        tree.dest(guestinit.DROPBEAR_KEY).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_key, tree.dest(guestinit.DROPBEAR_KEY))
        tree.dest(guestinit.DROPBEAR_KEY).chmod(0o600)
    tree.add_files(recipe, build_dir)
    (rootfs / "etc/machine-id").write_text("")


def make_disk(rootfs: Path, dest: Path, size: str, log: Path) -> None:
    """ext4 filled from the directory (no loop mount), then compacted into qcow2."""
    raw = dest.with_suffix(".raw")
    run(["mkfs.ext4", "-q", "-F", "-L", "reprolab-root", "-O", _EXT4_FEATURES, "-d", rootfs,
         raw, size], timeout=1200, log=log)
    tmp = dest.with_name(dest.name + ".tmp")
    run(["qemu-img", "convert", "-O", "qcow2", raw, tmp], timeout=1200, log=log)
    raw.unlink()
    tmp.chmod(0o444)
    tmp.rename(dest)


def make_overlay_file(base: Path, run_dir: Path, name: str) -> Path:
    """qcow2 overlay backed by ``base``, owned by libvirt-qemu so QEMU can write it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / f"{name}-overlay.qcow2"
    overlay.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.resolve(),
         overlay], timeout=60)
    try:
        user = pwd.getpwnam("libvirt-qemu")
    except KeyError as exc:
        raise InfraError("user libvirt-qemu missing: is libvirt installed?") from exc
    shutil.chown(overlay, user.pw_uid, user.pw_gid)
    overlay.chmod(0o660)
    return overlay
