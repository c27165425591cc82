"""What a kernel under test is, once it exists on disk.

Both the stock kernel and a built one end up as :class:`KernelArtifacts`, so the guest, image
and triage layers never care where a kernel came from.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from reprolab.errors import UserError
from reprolab.paths import cache_root


@dataclass(frozen=True)
class KernelArtifacts:
    """A bootable kernel and what belongs with it."""

    #: bzImage the guest boots (under a path libvirt-qemu can read).
    image: Path
    #: ``uname -r`` of the kernel, the directory name under ``lib/modules``.
    release: str
    #: Root holding ``lib/modules/<release>`` (``/`` for the stock kernel).
    modules_root: Path
    #: The kernel's .config, where known.
    config: Path | None
    #: vmlinux with debug info, where available (built kernels; stock needs the -dbg package).
    vmlinux: Path | None
    #: Content key: a build's cache key, or the stock image's hash.
    key: str
    #: ``stock`` or ``build``.
    origin: str

    @property
    def modules_dir(self) -> Path:
        return self.modules_root / "lib" / "modules" / self.release

    def config_value(self, option: str) -> str | None:
        """Value of ``CONFIG_<option>`` in the kernel's .config (None if unset or unknown)."""
        if self.config is None or not self.config.exists():
            return None
        name = option if option.startswith("CONFIG_") else f"CONFIG_{option}"
        for line in self.config.read_text(errors="replace").splitlines():
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip('"')
        return None


_RELEASE = re.compile(r"vmlinuz-(?P<release>.+)$")


def _version_key(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", release))


def stock_image(boot: Path = Path("/boot"), modules: Path = Path("/")) -> Path:
    """The newest Debian kernel image installed on the host that has its modules.

    Debian's point releases move the stock kernel (6.1.0-56 -> -57), so nothing may name its
    version: this is the one place that finds it, for the guests, ``doctor`` and the tests.
    """
    candidates = sorted(
        (p for p in boot.glob("vmlinuz-*") if _RELEASE.search(p.name)),
        key=lambda p: _version_key(p.name),
    )
    candidates = [
        p for p in candidates
        if (modules / "lib/modules" / p.name.removeprefix("vmlinuz-")).is_dir()
    ]
    if not candidates:
        raise UserError(
            f"no stock kernel: no {boot}/vmlinuz-* with modules under "
            f"{modules / 'lib/modules'} (apt-get install linux-image-amd64)"
        )
    return candidates[-1]


def stock_release(boot: Path = Path("/boot"), modules: Path = Path("/")) -> str:
    """``uname -r`` of :func:`stock_image`."""
    return stock_image(boot, modules).name.removeprefix("vmlinuz-")


def stock_kernel(boot: Path = Path("/boot"), modules: Path = Path("/")) -> KernelArtifacts:
    """The newest Debian kernel installed on the host (``linux-image-amd64``).

    Not ``uname -r``: the runner may itself be a VM or container whose running kernel is not
    installed in /boot. The image is copied into the cache because libvirt relabels what a
    domain boots from, and the host's /boot must not change owner under our feet.
    """
    src = stock_image(boot, modules)
    release = src.name.removeprefix("vmlinuz-")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    dest_dir = cache_root() / "kernels" / f"stock-{release}-{digest}"
    dest = dest_dir / "bzImage"
    with FileLock(str(dest_dir) + ".lock"):
        if not dest.exists():
            dest_dir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            tmp.chmod(0o644)
            tmp.rename(dest)
    config = boot / f"config-{release}"
    dbg = Path("/usr/lib/debug/boot") / f"vmlinux-{release}"
    return KernelArtifacts(
        image=dest,
        release=release,
        modules_root=modules,
        config=config if config.exists() else None,
        vmlinux=dbg if dbg.exists() else None,
        key=f"stock-{release}-{digest}",
        origin="stock",
    )
