"""A real bisection: `reprolab bisect` names the commit that brought in a soft lockup.

The tree is Debian's linux-source-6.12 made into a git repository (cached, then cloned per
run) with five small commits on top; the third makes a write of "spin" to
/proc/sys/kernel/domainname spin with preemption off in proc_do_uts_string, which the soft
lockup detector reports. The test case writes that sysctl from the minimal image's console.
Every commit touches one file, so each step's build is ccache serving everything else.
Commits are made with a pinned author and dates, so their hashes (and so the kernel cache
keys) are the same on every run: on a warm cache a rerun costs only the attempts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from filelock import FileLock

from reprolab.paths import cache_root

TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
UTS = "kernel/utsname_sysctl.c"
ANCHOR = "\t\tadd_device_randomness(tmp_data, sizeof(tmp_data));\n"
SPIN = (
    "\t\tif (!strncmp(tmp_data, \"spin\", 4)) {\n"
    "\t\t\tpreempt_disable();\n"
    "\t\t\tfor (;;)\n"
    "\t\t\t\tcpu_relax();\n"
    "\t\t}\n"
)
#: (file, text appended or inserted, subject); the third is the culprit.
SERIES: tuple[tuple[str, str, str], ...] = (
    ("fs/proc/version.c", "\n/* reprolab bisect fixture: harmless 1 */\n", "proc: comment 1"),
    ("lib/ctype.c", "\n/* reprolab bisect fixture: harmless 2 */\n", "lib: comment 2"),
    (UTS, SPIN, "utsname: spin on a write of 'spin' (the culprit)"),
    ("kernel/sys_ni.c", "\n/* reprolab bisect fixture: harmless 4 */\n", "sys_ni: comment 4"),
    ("fs/proc/version.c", "\n/* reprolab bisect fixture: harmless 5 */\n", "proc: comment 5"),
)
CULPRIT_INDEX = 2

CASE = '''
"""Bisect fixture: a sysctl write that spins with preemption off (soft lockup)."""

import pytest


@pytest.mark.reprolab(
    kernel="build:linux-source-6.12",
    guest={"vcpus": 1, "memory": "256M", "image": "minimal"},
    cmdline={"watchdog_thresh": 1},
    expect={"kind": "soft-lockup", "in_stack": "proc_do_uts_string"},
    dump=None,
    boot_timeout=120,
)
def test_domainname_spin(guest):
    guest.console.send("echo spin > /proc/sys/kernel/domainname")
    guest.wait(seconds=8)
'''


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "reprolab", "GIT_AUTHOR_EMAIL": "ci@reprolab",
           "GIT_COMMITTER_NAME": "reprolab", "GIT_COMMITTER_EMAIL": "ci@reprolab",
           "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"}
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def base_tree() -> Path:
    """Debian's 6.12 source as a one-commit git repository, made once per host."""
    repo = cache_root() / "test-trees" / "linux-source-6.12.git"
    repo.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(repo) + ".lock"):
        if (repo / ".git" / "reprolab-complete").exists():
            return repo
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir()
        subprocess.run(["tar", "-xf", str(TARBALL), "-C", str(repo), "--strip-components=1"],
                       check=True)
        # Debian's packaging ignores every top-level path ("/*"); a kernel tree does not.
        ignore = repo / ".gitignore"
        text = ignore.read_text()
        ignore.write_text(text.split("# Debian packaging", 1)[0])
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "config", "gc.auto", "0")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "linux-source-6.12 (Debian)")
        (repo / ".git" / "reprolab-complete").write_text("ok\n")
    return repo


def make_series(dest: Path) -> list[str]:
    """Clone the base tree to ``dest`` and add :data:`SERIES`; returns [base, c1..c5]."""
    base = base_tree()
    subprocess.run(["git", "clone", "-q", "--local", str(base), str(dest)], check=True)
    commits = [_git(dest, "rev-parse", "HEAD")]
    for path, text, subject in SERIES:
        target = dest / path
        body = target.read_text()
        if text is SPIN:
            assert ANCHOR in body, f"{path} changed: no anchor for the culprit"
            body = body.replace(ANCHOR, ANCHOR + text, 1)
        else:
            body += text
        target.write_text(body)
        _git(dest, "commit", "-q", "-am", subject)
        commits.append(_git(dest, "rev-parse", "HEAD"))
    return commits


@pytest.mark.vm
def test_bisect_names_the_lockup_commit(tmp_path: Path) -> None:
    if not TARBALL.exists():
        pytest.skip(f"needs {TARBALL} (apt-get install linux-source-6.12)")
    tree = tmp_path / "linux"
    commits = make_series(tree)
    case = tmp_path / "cases" / "test_domainname_spin.py"
    case.parent.mkdir()
    case.write_text(textwrap.dedent(CASE))
    out = tmp_path / "bisect"
    done = subprocess.run(
        [sys.executable, "-m", "reprolab.cli", "bisect", str(case), "--tree", str(tree),
         "--good", commits[0], "--bad", commits[-1], "--calibrate", "5",
         "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=40 * 60,
    )
    print(done.stdout[-6000:])
    print(done.stderr[-6000:])
    assert done.returncode == 0, done.stderr[-2000:]
    culprit = commits[1 + CULPRIT_INDEX]
    report = json.loads((out / "report.json").read_text())
    assert report["culprit"] == culprit
    assert culprit in done.stdout
    # The tree is left as it was: no bisection in progress, HEAD back on the branch.
    assert not (tree / ".git" / "BISECT_START").exists()
    assert _git(tree, "rev-parse", "HEAD") == commits[-1]
    # Every attempt left a replay bundle naming the commit it built.
    bundles = list((out / "attempts").rglob("bundle/bundle.json"))
    assert bundles
    built = {json.loads(b.read_text())["commit"] for b in bundles}
    assert culprit in built and commits[0] in built
