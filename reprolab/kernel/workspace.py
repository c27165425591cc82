"""A persistent build workspace per source: one source tree and one ``O=`` directory, reused.

A bisection step or a patched rebuild used to start from a fresh tree: tens of seconds to
extract or check out, then a full ``make`` whose objects ccache could only partly save. Here
each source gets one workspace (``src/`` and ``obj/`` under the cache), and a build moves it
to what it needs: ``git checkout`` of the commit in a git tree's worktree, or a reset to the
pristine extracted tarball (committed once into a private repository), then ``git clean``.
Only files that differ get a new mtime, so make rebuilds only what changed. The cache key is
untouched: the workspace is how a build is made, not what it is.

A build that fails (a compiler error, a patch that does not apply) leaves the workspace
usable: the next build resets it. One interrupted or broken by the infrastructure is dropped
entirely, git worktree registration included, so nothing half-done is reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from reprolab.errors import UserError
from reprolab.kernel import source as source_mod
from reprolab.paths import cache_root
from reprolab.proc import run

#: ``git`` without the user's hooks, signing or identity getting in the way.
_GIT = ["git", "-c", "user.name=reprolab", "-c", "user.email=reprolab@localhost",
        "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"]


@dataclass(frozen=True)
class Workspace:
    root: Path
    #: The source this workspace belongs to (where its worktree is registered).
    source: source_mod.Source

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def obj(self) -> Path:
        return self.root / "obj"

    @property
    def _ready(self) -> Path:
        return self.root / "ready"

    @property
    def pristine(self) -> list[str]:
        """git on the tarball's private repository, kept outside ``src`` so the kernel's
        ``setlocalversion`` does not see a repository and change the release string."""
        return [*_GIT, f"--git-dir={self.root / 'pristine.git'}", f"--work-tree={self.src}"]

    def lock(self) -> FileLock:
        """Held for a whole build: two commits of one tree cannot share a workspace at once."""
        locks = cache_root() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"workspace-{self.root.name}.lock"))


def workspaces_dir() -> Path:
    return cache_root() / "workspaces"


def for_source(source: source_mod.Source) -> Workspace | None:
    """The workspace of ``source``; None for a plain directory (copied fresh each build)."""
    if source.kind == "git":
        ident = "git-" + hashlib.sha256(str(source.location.resolve()).encode()).hexdigest()[:16]
    elif source.kind == "tarball":
        ident = source.source_id
    else:
        return None
    return Workspace(workspaces_dir() / ident, source)


def checkout(ws: Workspace, *, log: Path) -> bool:
    """Bring ``ws.src`` to the source (commit, pristine tarball, uncommitted diff).

    Returns whether an existing workspace was reused (False: created from scratch).
    """
    reused = _usable(ws)
    if reused:
        _reset(ws, log)
    else:
        drop(ws)
        _create(ws, log)
        ws._ready.write_text("ready\n")
    if ws.source.dirty_diff:  # git trees only
        run(["git", "-C", ws.src, "apply", "--index", "--binary", "-"],
            stdin=ws.source.dirty_diff, log=log, error=UserError)
    source_mod._check_kernel_tree(ws.src)
    return reused


def drop(ws: Workspace) -> None:
    """Remove the workspace and, for a git tree, its worktree registration."""
    if ws.source.kind == "git":
        run(["git", "-C", ws.source.location, "worktree", "remove", "--force", ws.src],
            check=False)
    shutil.rmtree(ws.root, ignore_errors=True)
    if ws.source.kind == "git":
        run(["git", "-C", ws.source.location, "worktree", "prune"], check=False)


def _usable(ws: Workspace) -> bool:
    if not ws._ready.exists() or not ws.src.is_dir():
        return False
    if ws.source.kind == "git":
        listed = run(["git", "-C", ws.source.location, "worktree", "list", "--porcelain"],
                     check=False)
        return listed.ok and f"worktree {ws.src.resolve()}" in listed.stdout.splitlines()
    return (ws.root / "pristine.git").is_dir()


def _create(ws: Workspace, log: Path) -> None:
    ws.root.mkdir(parents=True, exist_ok=True)
    src = ws.src
    if ws.source.kind == "git":
        run(["git", "-C", ws.source.location, "worktree", "prune"], log=log, check=False)
        run(["git", "-C", ws.source.location, "worktree", "add", "--detach", src,
             ws.source.commit or "HEAD"], log=log)
        return
    src.mkdir()
    run(["tar", "-xf", ws.source.location, "-C", src, "--strip-components=1"], log=log)
    # A private repository of the pristine tree: resetting it after a patched build
    # rewrites only the files the patches touched. -f: the tree's .gitignore must not hide
    # shipped files (a later clean would delete them).
    run([*ws.pristine, "init", "-q"], log=log)
    run([*ws.pristine, "add", "-A", "-f"], log=log)
    run([*ws.pristine, "commit", "-q", "--no-verify", "-m", "pristine"], log=log)


def _reset(ws: Workspace, log: Path) -> None:
    src = ws.src
    if ws.source.kind == "git":
        run(["git", "-C", src, "checkout", "-q", "--detach", "--force",
             ws.source.commit or "HEAD"], log=log)
    else:
        run([*ws.pristine, "reset", "-q", "--hard"], log=log)
        run([*ws.pristine, "clean", "-q", "-f", "-d", "-x"], log=log)
        return
    run(["git", "-C", src, "clean", "-q", "-f", "-d", "-x"], log=log)


def _config_state(ws: Workspace) -> Path:
    return ws.root / "configured.json"


def config_still_valid(ws: Workspace, config_inputs: str, patched: bool) -> bool:
    """Whether ``obj/.config`` from the last build here is what configuring would give now.

    Only for a clean git commit after a clean git commit with the same config inputs, when
    no Kconfig file (nor kconfig itself) changed between the two: then the config targets
    would write the same .config, and skipping them saves a bisect step tens of seconds.
    Anything else (patches, uncommitted changes, a tarball) configures as usual.
    """
    if ws.source.kind != "git" or patched or ws.source.dirty_diff or not ws.source.commit:
        return False
    try:
        state = json.loads(_config_state(ws).read_text())
    except (OSError, ValueError):
        return False
    if state.get("config") != config_inputs or not state.get("commit"):
        return False
    if not (ws.obj / ".config").is_file():
        return False
    changed = run(["git", "-C", ws.src, "diff", "--name-only", str(state["commit"]),
                   ws.source.commit], check=False)
    if not changed.ok:
        return False
    return not any(Path(name).name.startswith("Kconfig") or name.startswith("scripts/kconfig/")
                   for name in changed.stdout.splitlines())


def forget_config(ws: Workspace) -> None:
    """Before configuring: a build that fails from here on leaves no claim about .config."""
    _config_state(ws).unlink(missing_ok=True)


def remember_config(ws: Workspace, config_inputs: str, patched: bool) -> None:
    """After a successful build: what ``obj/.config`` was made from."""
    if ws.source.kind != "git" or patched or ws.source.dirty_diff:
        forget_config(ws)
        return
    _config_state(ws).write_text(json.dumps({"config": config_inputs,
                                             "commit": ws.source.commit}) + "\n")
