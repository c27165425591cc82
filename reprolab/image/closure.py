"""Programs of Debian packages installed on the host, with their shared-library closure.

An initramfs guest is assembled from the host's own files, not from a second distribution:
the host is Debian (bootstrap installs the packages a recipe names), so a program and the
libraries ``ldd`` resolves for it run unchanged in the guest. A package that is unknown, or
known but not installed, or a binary whose library cannot be found, is reported against the
recipe line that asked for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reprolab.errors import UserError
from reprolab.image.recipe import ImageRecipe
from reprolab.proc import run

#: Directories whose files count as a package's programs.
PROGRAM_DIRS = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/libexec/")

_LDD_ARROW = re.compile(r"^\s*(?P<name>\S+)\s+=>\s+(?P<path>\S+)?\s*(\(0x[0-9a-f]+\))?\s*$")
_LDD_DIRECT = re.compile(r"^\s*(?P<path>/\S+)\s+\(0x[0-9a-f]+\)\s*$")


@dataclass(frozen=True)
class Program:
    path: str
    package: str


def package_versions(recipe: ImageRecipe) -> dict[str, str]:
    """Installed version of each recipe package (the cache key's view of the host)."""
    versions: dict[str, str] = {}
    for pkg in recipe.packages:
        done = run(["dpkg-query", "-W", "-f", "${Status}\t${Version}", pkg], check=False)
        status, _, version = done.stdout.partition("\t")
        if done.ok and status.endswith(" installed"):
            versions[pkg] = version
            continue
        known = run(["apt-cache", "show", "--no-all-versions", pkg], check=False)
        if not known.ok or not known.stdout.strip():
            raise UserError(f"{recipe.where('packages', pkg)}: unknown Debian package {pkg!r}")
        raise UserError(
            f"{recipe.where('packages', pkg)}: package {pkg!r} is not installed on this host "
            f"(apt-get install {pkg}, or run scripts/bootstrap.sh)"
        )
    return versions


def check_known(recipe: ImageRecipe) -> None:
    """Fail early on package names apt has never heard of (for images built by apt).

    One ``apt-cache show`` for all names (it costs about a second per call on a host with
    several sources), then the stanzas say which names exist. Only meaningful when the
    host's apt lists describe the recipe's suite; for another suite mmdebstrap's own error
    (in the build log) has to do.
    """
    if not recipe.packages:
        return
    done = run(["apt-cache", "show", "--no-all-versions", *recipe.packages], check=False)
    found = set(re.findall(r"^Package: (\S+)$", done.stdout, flags=re.MULTILINE))
    for pkg in recipe.packages:
        if pkg not in found:
            raise UserError(f"{recipe.where('packages', pkg)}: unknown Debian package {pkg!r}")


def host_codename() -> str | None:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def package_programs(recipe: ImageRecipe) -> list[Program]:
    """Executables the recipe's packages ship, as host paths (symlinks kept as paths)."""
    programs: list[Program] = []
    for pkg in recipe.packages:
        listing = run(["dpkg-query", "-L", pkg]).stdout.splitlines()
        for entry in listing:
            if not entry.startswith(PROGRAM_DIRS):
                continue
            path = Path(entry)
            if path.is_dir() or not path.exists():
                continue
            if path.resolve().stat().st_mode & 0o111:
                programs.append(Program(path=entry, package=pkg))
    return programs


def is_elf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"\x7fELF"


def interpreter_of(path: Path) -> str | None:
    """``#!`` interpreter of a script (None for binaries or files without one)."""
    with path.open("rb") as fh:
        head = fh.read(256)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    return line.split()[0] if line else None


def library_closure(binary: Path, *, where: str) -> list[str]:
    """Absolute paths of every shared object ``binary`` loads (interpreter included).

    ``ldd`` asks the ELF interpreter itself, so transitive DT_NEEDED entries, the search path
    and ``$ORIGIN`` are resolved exactly as at run time. Static binaries have no closure.
    """
    done = run(["ldd", binary], check=False)
    text = done.stdout + done.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if not done.ok:
        raise UserError(f"{where}: cannot read the libraries of {binary}: {done.tail(1)}")
    libs: list[str] = []
    missing: list[str] = []
    for line in done.stdout.splitlines():
        arrow = _LDD_ARROW.match(line)
        if arrow:
            lib = arrow.group("path")
            if lib is None or lib == "not":
                missing.append(arrow.group("name"))
            elif lib.startswith("/"):
                libs.append(lib)
            continue
        direct = _LDD_DIRECT.match(line)
        if direct:
            libs.append(direct.group("path"))
    if "not found" in done.stdout and not missing:
        missing = [ln.split()[0] for ln in done.stdout.splitlines() if "not found" in ln]
    if missing:
        raise UserError(
            f"{where}: {binary} needs {', '.join(missing)}, which cannot be found on this host"
        )
    return libs
