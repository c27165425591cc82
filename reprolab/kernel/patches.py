"""Patch series: which patches, in what order, their hashes, and applying them.

A series is a directory of patches (``*.patch``, ``*.diff``, ``*.mbox``, ``*.eml``, in name
order, or its quilt ``series`` file when it has one), a quilt ``series`` file, or a single
patch or mbox file. Patches go on with ``git apply`` in a git worktree and with ``patch``
in a plain tree; a patch that does not apply is reported with its name and the file that
failed, because "patch 3 failed" alone sends the user hunting.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from reprolab.errors import UserError
from reprolab.proc import run

PATCH_SUFFIXES = (".patch", ".diff", ".mbox", ".eml")
_STRIP = re.compile(r"^-p\s*(\d+)$")
_GIT_FAILED = (
    re.compile(r"error: patch failed: (?P<file>\S+?):\d+"),
    re.compile(r"error: (?P<file>\S+?): (?:patch does not apply|No such file or directory|"
               r"does not exist in index|already exists in (?:index|working directory))"),
)
_PATCHING = re.compile(r"^(?:patching|checking) file '?(?P<file>[^']+?)'?$")
_PLUS = re.compile(r"^\|?\+\+\+ (?:[ab]/)?(?P<file>\S+)")


@dataclass(frozen=True)
class Patch:
    """One patch of a series."""

    path: Path
    #: ``-p`` strip level (quilt series files may say otherwise; default 1).
    strip: int = 1

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class PatchError(UserError):
    """A patch that does not apply to the source under test."""

    def __init__(self, message: str, *, patch: Path, file: str | None, detail: str) -> None:
        super().__init__(message, detail=detail)
        self.patch = patch
        self.file = file


def collect(location: Path) -> tuple[Patch, ...]:
    """The series at ``location``, in application order."""
    if not location.exists():
        raise UserError(f"patch series {location} does not exist")
    if location.is_dir():
        series = location / "series"
        if series.is_file():
            return _read_series(series)
        found = sorted(
            p for p in location.iterdir()
            if p.is_file() and p.name.endswith(PATCH_SUFFIXES) and not p.name.startswith(".")
        )
        if not found:
            raise UserError(
                f"patch directory {location} holds no {'/'.join(PATCH_SUFFIXES)} files "
                "and no quilt series file"
            )
        return tuple(Patch(p) for p in found)
    if location.name == "series":
        return _read_series(location)
    return (Patch(location),)


def _read_series(series: Path) -> tuple[Patch, ...]:
    patches: list[Patch] = []
    for number, raw in enumerate(series.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, *opts = line.split()
        strip = 1
        for opt in opts:
            match = _STRIP.match(opt)
            if not match:
                raise UserError(f"{series}:{number}: unsupported quilt option {opt!r}")
            strip = int(match[1])
        path = series.parent / name
        if not path.is_file():
            raise UserError(f"{series}:{number}: patch {name} does not exist")
        patches.append(Patch(path, strip))
    if not patches:
        raise UserError(f"quilt series {series} lists no patches")
    return tuple(patches)


def hashes(patches: tuple[Patch, ...]) -> list[str]:
    """Content hashes in order (the strip level too, since it changes the result)."""
    return [f"{p.sha256()}:p{p.strip}" for p in patches]


def apply(tree: Path, patches: tuple[Patch, ...], *, use_git: bool, log: Path) -> None:
    """Apply the series to ``tree`` in order; raise :class:`PatchError` on the first failure."""
    for index, patch in enumerate(patches, 1):
        if use_git:
            argv = ["git", "-C", str(tree), "apply", "--index", f"-p{patch.strip}",
                    str(patch.path)]
        else:
            argv = ["patch", "-d", str(tree), f"-p{patch.strip}", "--batch", "--forward",
                    "--no-backup-if-mismatch", "-i", str(patch.path)]
        done = run(argv, check=False)
        with log.open("a") as sink:
            sink.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
        if not done.ok:
            output = done.stdout + "\n" + done.stderr
            failed = failing_file(output, use_git=use_git)
            where = f" at {failed}" if failed else ""
            raise PatchError(
                f"patch {index}/{len(patches)} {patch.path.name} does not apply{where}"
                f" ({'git apply' if use_git else 'patch'}: {done.tail(1)})",
                patch=patch.path,
                file=failed,
                detail=done.tail(30),
            )


def failing_file(output: str, *, use_git: bool) -> str | None:
    """The file a failed ``git apply`` or ``patch`` run names, if it names one."""
    if use_git:
        for pattern in _GIT_FAILED:
            match = pattern.search(output)
            if match:
                return match["file"]
        return None
    current: str | None = None
    lines = output.splitlines()
    for number, line in enumerate(lines):
        match = _PATCHING.match(line.strip())
        if match:
            current = match["file"]
        elif "FAILED" in line or "Reversed (or previously applied)" in line:
            return current
        elif line.startswith("can't find file to patch"):
            for later in lines[number + 1:]:
                plus = _PLUS.match(later.strip())
                if plus:
                    return plus["file"]
            return None
    return None
