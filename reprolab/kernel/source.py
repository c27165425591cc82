"""Kernel sources: what a spec's source is, its identity, and a private tree to build in.

The identity (``source_id``) goes into the build cache key and must be cheap, because a
cache hit should not cost an extraction: a tarball is named by its content hash (memoised
per path, size and mtime), a git tree by the commit (plus a hash of uncommitted changes
when built as checked out), a plain tree by the hash of its files.

Every build gets its own copy of the source (``prepare``): a tarball is extracted, a git
tree gets a detached ``git worktree`` (so the user's checkout and index are never touched,
which matters under ``git bisect run``), a plain tree is copied. Patches then change that
copy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from reprolab.errors import UserError
from reprolab.kernel.spec import DEBIAN_SOURCE, BuildSpec, is_tarball
from reprolab.paths import cache_root
from reprolab.proc import run

DEBIAN_SRC_DIR = Path("/usr/src")
#: Files a directory must have to be taken for a kernel tree.
_KERNEL_MARKERS = ("Makefile", "Kconfig", "arch/x86/Kconfig", "scripts/kconfig")
_VERSION = re.compile(r"^(VERSION|PATCHLEVEL)\s*=\s*(\d+)\s*$", re.M)
_TARBALL_VERSION = re.compile(r"(?:linux|linux-source)-(\d+)\.(\d+)")


@dataclass(frozen=True)
class Source:
    """A resolved source: where it is, what it is, and who it is."""

    #: ``tarball``, ``git`` or ``tree``.
    kind: str
    #: The tarball file or the tree directory.
    location: Path
    #: Stable identity for the cache key.
    source_id: str
    #: ``(major, minor)`` from the top-level Makefile.
    version: tuple[int, int]
    #: Full commit hash (git trees only).
    commit: str | None = None
    #: Uncommitted tracked changes to carry into the build (git tree built as checked out).
    dirty_diff: bytes = b""


def locate(spec: BuildSpec) -> Source:
    """Resolve the spec's source and compute its identity, without copying anything."""
    if DEBIAN_SOURCE.match(spec.source):
        tarball = _debian_tarball(spec.source)
        return _tarball_source(tarball)
    path = Path(spec.source)
    if not path.exists():
        raise UserError(f"kernel source {path} does not exist")
    if path.is_file():
        if not is_tarball(path.name):
            raise UserError(
                f"kernel source {path} is a file but not a source tarball (.tar.xz, .tar.gz, ...)"
            )
        return _tarball_source(path)
    if _is_git_tree(path):
        return _git_source(path, spec.commit)
    if spec.commit is not None:
        raise UserError(f"kernel source {path} is not a git tree, so @{spec.commit} cannot apply")
    _check_kernel_tree(path)
    return Source(
        kind="tree",
        location=path,
        source_id="tree-" + _hash_tree(path),
        version=_makefile_version((path / "Makefile").read_text(errors="replace"), path),
    )


def prepare(source: Source, dest: Path, *, log: Path) -> None:
    """Put a private copy of ``source`` at ``dest`` (which must not exist yet)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.kind == "tarball":
        dest.mkdir()
        run(["tar", "-xf", source.location, "-C", dest, "--strip-components=1"], log=log)
    elif source.kind == "git":
        run(["git", "-C", source.location, "worktree", "prune"], log=log, check=False)
        run(["git", "-C", source.location, "worktree", "add", "--detach", dest,
             source.commit or "HEAD"], log=log)
        if source.dirty_diff:
            run(["git", "-C", dest, "apply", "--index", "--binary", "-"], stdin=source.dirty_diff,
                log=log, error=UserError)
    else:
        run(["cp", "-a", f"{source.location}/.", dest], log=log)
        if (dest / ".config").exists() or (dest / "include" / "config").exists():
            # An in-tree build left behind would make every O= build refuse to start.
            run(["make", "-C", dest, "-s", "mrproper"], log=log)
    _check_kernel_tree(dest)


def release(source: Source, dest: Path) -> None:
    """Remove a prepared copy (and, for git, its worktree registration)."""
    if source.kind == "git":
        run(["git", "-C", source.location, "worktree", "remove", "--force", dest], check=False)
        run(["git", "-C", source.location, "worktree", "prune"], check=False)
    shutil.rmtree(dest, ignore_errors=True)


def _debian_tarball(name: str) -> Path:
    tarballs = sorted(DEBIAN_SRC_DIR.glob(f"{name}.tar*"))
    if not tarballs:
        raise UserError(
            f"{name}: no {DEBIAN_SRC_DIR}/{name}.tar.xz (apt-get install {name})"
        )
    return tarballs[0]


def _tarball_source(tarball: Path) -> Source:
    digest, version = _tarball_identity(tarball)
    return Source(kind="tarball", location=tarball, source_id=f"tar-{digest}", version=version)


def _tarball_identity(tarball: Path) -> tuple[str, tuple[int, int]]:
    """Content hash and kernel version of a tarball, memoised by path, size and mtime.

    Hashing 150 MB costs about half a second and reading the version out of an xz tarball
    several seconds, too much for every cache hit.
    """
    st = tarball.stat()
    stamp = f"{tarball.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    memo = cache_root() / "sources" / (hashlib.sha256(stamp.encode()).hexdigest()[:24] + ".json")
    if memo.exists():
        data = json.loads(memo.read_text())
        return str(data["sha256"]), (int(data["version"][0]), int(data["version"][1]))
    h = hashlib.sha256()
    with tarball.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()[:16]
    version = _tarball_version(tarball)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"path": str(tarball), "sha256": digest, "version": version}))
    tmp.rename(memo)
    return digest, version


def _tarball_version(tarball: Path) -> tuple[int, int]:
    match = _TARBALL_VERSION.search(tarball.name)
    if match:
        return int(match[1]), int(match[2])
    listing = run(["tar", "-tf", tarball], error=UserError).stdout.splitlines()
    tops = [n for n in listing if n.count("/") == 1 and n.endswith("/Makefile")]
    if not tops:
        raise UserError(f"{tarball} holds no top-level Makefile: not a kernel source tarball")
    text = run(["tar", "-xOf", tarball, tops[0]], error=UserError).stdout
    return _makefile_version(text, tarball)


def _is_git_tree(path: Path) -> bool:
    done = run(["git", "-C", path, "rev-parse", "--show-toplevel"], check=False)
    return done.ok and Path(done.stdout.strip()).resolve() == path.resolve()


def _git_source(path: Path, commit: str | None) -> Source:
    rev = commit or "HEAD"
    done = run(["git", "-C", path, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
               check=False)
    if not done.ok:
        raise UserError(f"commit {rev!r} does not exist in {path}")
    sha = done.stdout.strip()
    makefile = run(["git", "-C", path, "show", f"{sha}:Makefile"], check=False)
    kconfig = run(["git", "-C", path, "cat-file", "-e", f"{sha}:arch/x86/Kconfig"], check=False)
    if not makefile.ok or not kconfig.ok:
        raise UserError(f"{path} at {sha[:12]} is not a Linux kernel tree (no Makefile/Kconfig)")
    diff = b""
    source_id = f"git-{sha}"
    if commit is None:
        raw = run(["git", "-C", path, "diff", "HEAD", "--binary"], check=True).stdout
        diff = raw.encode()
        if diff:
            source_id += "-dirty-" + hashlib.sha256(diff).hexdigest()[:12]
    return Source(
        kind="git",
        location=path,
        source_id=source_id,
        version=_makefile_version(makefile.stdout, path),
        commit=sha,
        dirty_diff=diff,
    )


def _check_kernel_tree(path: Path) -> None:
    missing = [m for m in _KERNEL_MARKERS if not (path / m).exists()]
    if missing:
        raise UserError(f"{path} is not a Linux kernel tree (missing {', '.join(missing)})")


def _makefile_version(text: str, where: Path) -> tuple[int, int]:
    found = dict((m[1], int(m[2])) for m in _VERSION.finditer(text))
    if "VERSION" not in found or "PATCHLEVEL" not in found:
        raise UserError(f"{where}: top-level Makefile has no VERSION/PATCHLEVEL: not a kernel")
    return found["VERSION"], found["PATCHLEVEL"]


def _hash_tree(path: Path) -> str:
    """Content hash of a plain tree, skipping build products an in-tree build leaves."""
    _check_kernel_tree(path)
    h = hashlib.sha256()
    skip_suffixes = (".o", ".ko", ".cmd", ".a", ".mod", ".order", ".symvers")
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".pc"))
        for name in sorted(files):
            if name.endswith(skip_suffixes):
                continue
            full = Path(root) / name
            if full.is_symlink() or not full.is_file():
                continue
            h.update(str(full.relative_to(path)).encode() + b"\0")
            h.update(hashlib.sha256(full.read_bytes()).digest())
    return h.hexdigest()[:16]
