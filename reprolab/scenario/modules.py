"""Load host-side kernel modules into a guest whose image does not carry them.

Images carry a short list of modules; a scenario that needs one more (ext4 and loop for a
frozen filesystem) should not force every image to grow. The guest's ``uname -r`` names the
kernel; its modules are on the host (``/lib/modules`` for the stock kernel, the build cache
for built ones), and ``modprobe --show-depends`` gives the load order with dependencies.
"""

from __future__ import annotations

from pathlib import Path

from reprolab.errors import InfraError
from reprolab.paths import cache_root
from reprolab.proc import run
from reprolab.scenario.base import GuestLike, one_line, q

GUEST_DIR = "/tmp/rl-modules"


def module_roots(release: str) -> list[Path]:
    """Roots holding ``lib/modules/<release>``: the host's own, then built kernels'."""
    roots = [Path("/")]
    kernels = cache_root() / "kernels"
    if kernels.is_dir():
        roots += sorted(p / "modroot" for p in kernels.iterdir() if (p / "modroot").is_dir())
    return [r for r in roots if (r / "lib" / "modules" / release).is_dir()]


def load_order(release: str, modules: tuple[str, ...]) -> list[Path]:
    """Module files to insmod, dependencies first; built-in modules need nothing."""
    roots = module_roots(release)
    if not roots:
        raise InfraError(f"no modules for kernel {release} on this host (looked in /lib/modules "
                         "and the kernel build cache)")
    files: list[Path] = []
    for mod in modules:
        res = run(["modprobe", "-S", release, "-d", str(roots[0]), "--show-depends", mod],
                  check=False)
        if res.rc != 0:
            raise InfraError(f"module {mod} not found for kernel {release}: "
                             f"{res.stderr.strip()[-200:]}")
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in files:
                    files.append(path)
    return files


def ensure_modules(guest: GuestLike, modules: tuple[str, ...], present: str) -> None:
    """Make ``modules`` available in the guest unless the ``present`` test already passes.

    ``present`` is a shell test (say ``grep -qw ext4 /proc/filesystems``). The guest's own
    modprobe is tried first; failing that the host's files are copied in over SSH.
    """
    names = " ".join(q(m) for m in modules)
    check = one_line(f"{present} || {{ for m in {names}; do modprobe $m 2>/dev/null; done; "
                     f"{present}; }} && echo present || echo missing")
    if guest.sh(check).strip().endswith("present"):
        return
    if guest.ssh is None:
        raise InfraError(f"modules {', '.join(modules)} missing in the guest and no SSH to "
                         "copy them in")
    release = guest.sh("uname -r").strip()
    files = load_order(release, modules)
    guest.sh(f"mkdir -p {GUEST_DIR}")
    for path in files:
        guest.ssh.put(path, f"{GUEST_DIR}/{path.name}")
    # A dependency may fail harmlessly (crc32c-intel needs SSE4.2 that qemu64 lacks).
    inserts = "; ".join(f"insmod {GUEST_DIR}/{p.name} 2>/dev/null" for p in files)
    guest.sh(one_line(f"{inserts}; {present}"))
