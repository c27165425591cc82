"""The field bisect story: `reprolab bisect` names the patch of a series that broke VM start.

Field report: a kernel with patches for a new CPU model (on v4.1-rc2) panicked in
kvm_cpu_vmxon at every qemu-kvm start. Here the series is testcases/patches/new-cpu-model/:
six small patches on Debian's linux-source-6.12 ("support for a new CPU model"), the fifth
of which makes svm_enable_virtualization_cpu fault on CPUs that show MOVBE. They are applied
with `git am` to Debian's 6.12 source made into a git repository (cached, then cloned per
run), and the bundled nested_kvm case
testcases/test_vmxon_nested_kvm.py::test_svm_first_vm_start_on_new_cpu_model (an L1 guest
with MOVBE starts one L2 guest) is the oracle.

CI-sized: the fault is deterministic, so one attempt measures the bad commit and one attempt
decides each step (--max-attempts 1, leaning on the evidence); the good commit is not
re-checked (it is the plain 6.12 build that case runs on in the test-case suite). The
patches touch few files and no header, so each step's build is ccache serving everything
else, warm from the 6.12 builds. Patches and commit dates are pinned, so the commit hashes
(and so the kernel cache keys) are the same on every run: on a warm cache a rerun costs
only the attempts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from reprolab.paths import cache_root

TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
ROOT = Path(__file__).resolve().parents[2]
SERIES = ROOT / "testcases" / "patches" / "new-cpu-model"
CASE = (f"{ROOT / 'testcases' / 'test_vmxon_nested_kvm.py'}"
        "::test_svm_first_vm_start_on_new_cpu_model")
#: The patch that brings the VM-start fault back (0-based in the series).
CULPRIT_INDEX = 4
CULPRIT_SUBJECT = "KVM: SVM: Set GIF early when enabling SVM on Zen5 refresh parts"
#: Pinned so a rerun makes the same commits (the author date comes from each patch).
PINNED = {"GIT_AUTHOR_NAME": "reprolab", "GIT_AUTHOR_EMAIL": "ci@reprolab",
          "GIT_COMMITTER_NAME": "reprolab", "GIT_COMMITTER_EMAIL": "ci@reprolab",
          "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
          "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **PINNED},
                          check=True, capture_output=True, text=True)
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
    """Clone the base tree to ``dest`` and `git am` the series; returns [base, p1..p6]."""
    base = base_tree()
    # gc.auto=0: the base holds ~80k loose objects, which `git am` would otherwise repack.
    subprocess.run(["git", "clone", "-q", "--local", "-c", "gc.auto=0", str(base), str(dest)],
                   check=True)
    commits = [_git(dest, "rev-parse", "HEAD")]
    for patch in sorted(SERIES.glob("*.patch")):
        _git(dest, "am", "-q", "--committer-date-is-author-date", str(patch))
        commits.append(_git(dest, "rev-parse", "HEAD"))
    return commits


@pytest.mark.vm
def test_bisect_names_the_new_cpu_model_patch(tmp_path: Path) -> None:
    if not TARBALL.exists():
        pytest.skip(f"needs {TARBALL} (apt-get install linux-source-6.12)")
    tree = tmp_path / "linux"
    commits = make_series(tree)
    assert len(commits) >= 7, "the series must have at least 6 patches"
    assert _git(tree, "log", "-1", "--format=%s", commits[1 + CULPRIT_INDEX]) == CULPRIT_SUBJECT
    out = tmp_path / "bisect"
    done = subprocess.run(
        [sys.executable, "-m", "reprolab.cli", "bisect", CASE, "--tree", str(tree),
         "--good", commits[0], "--bad", commits[-1], "--calibrate", "1",
         "--max-attempts", "1", "--on-cap", "lean", "--no-verify-good", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60 * 60,
    )
    print(done.stdout[-6000:])
    print(done.stderr[-6000:])
    assert done.returncode == 0, done.stderr[-2000:]
    culprit = commits[1 + CULPRIT_INDEX]
    report = json.loads((out / "report.json").read_text())
    assert report["culprit"] == culprit
    assert culprit in done.stdout and CULPRIT_SUBJECT in done.stdout
    # Every step ran its one attempt and says how long it took.
    steps = [s for s in report["steps"] if not s.get("check")]
    assert steps and all(s["attempts"] == 1 and s["duration"] > 0 for s in steps)
    # The tree is left as it was: no bisection in progress, HEAD back on the branch.
    assert not (tree / ".git" / "BISECT_START").exists()
    assert _git(tree, "rev-parse", "HEAD") == commits[-1]
    # Every attempt left a replay bundle naming the commit it built.
    bundles = list((out / "attempts").rglob("bundle/bundle.json"))
    built = {json.loads(b.read_text())["commit"] for b in bundles}
    assert culprit in built
