"""Small real git trees for bisection tests: one commit per entry, each with its repro rate."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from flaky_oracle import FLAG

from reprolab.bisect.driver import bisect_in_progress
from reprolab.proc import run

HERE = Path(__file__).resolve().parent


def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit identity for test repos, and this directory importable by step children."""
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(key, "reprolab test")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, "test@reprolab.invalid")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(HERE) + (os.pathsep + path if path else ""))


def make_repo(root: Path, flags: Sequence[str | None]) -> list[str]:
    """One commit per entry; the entry is that commit's ``bug.rate`` (None: no file)."""
    root.mkdir()
    run(["git", "init", "-q", "-b", "main", str(root)])
    shas = []
    for index, flag in enumerate(flags, start=1):
        (root / "version").write_text(f"{index}\n")
        if flag is None:
            (root / FLAG).unlink(missing_ok=True)
        else:
            (root / FLAG).write_text(flag + "\n")
        run(["git", "-C", str(root), "add", "-A"])
        run(["git", "-C", str(root), "commit", "-q", "-m", f"commit {index}"])
        shas.append(run(["git", "-C", str(root), "rev-parse", "HEAD"]).stdout.strip())
    return shas


def assert_reset(repo: Path) -> None:
    """The bisection is over and the tree is back on its branch."""
    assert not bisect_in_progress(repo)
    branch = run(["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"]).stdout.strip()
    assert branch == "main"
