"""The persistent build workspace, and a build stopped by a signal, on the miniature tree.

What is tested: one worktree and one ``O=`` directory serve every commit of a tree (unchanged
files keep their mtime, so make would rebuild only what changed), a tarball's workspace goes
back to pristine between patch series, and ``kill -INT``/``kill -TERM`` of a real
``reprolab build-kernel`` ends make's whole process group and leaves no workspace, worktree,
cache entry or lock-only entry behind. Speed is bench/bench_kernel_build.py's job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from kernel_tree import diff, make_tree

from reprolab.kernel.build import build_kernel
from reprolab.kernel.spec import BuildSpec
from reprolab.proc import run

REPO = Path(__file__).resolve().parents[2]
GIT = ["-c", "user.name=t", "-c", "user.email=t@t"]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(path))
    return path


def _commit(tree: Path, text: str, message: str) -> str:
    (tree / "init/main.c").write_text(f"int main(void)\n{{\n\t{text}\n}}\n")
    run(["git", "-C", tree, *GIT, "commit", "-qam", message])
    return run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()


def _spec(tree: Path, commit: str | None = None, patches: Path | None = None) -> BuildSpec:
    return BuildSpec(source=str(tree), commit=commit, reprolab_fragments=False,
                     patches=patches)


def test_one_workspace_serves_every_commit_of_a_tree(tmp_path: Path, cache: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    first = run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()
    (tree / "drivers").mkdir()
    (tree / "drivers/untouched.c").write_text("int untouched;\n")
    run(["git", "-C", tree, "add", "-A"])
    run(["git", "-C", tree, *GIT, "commit", "-qm", "driver"])
    second = _commit(tree, "return 5;", "five")
    messages: list[str] = []
    built = build_kernel(_spec(tree, second), progress=messages.append)
    assert "return 5" in built.image.read_text()
    assert any(m.startswith("workspace created") for m in messages)
    (workspace,) = (cache / "workspaces").iterdir()
    leftover = workspace / "obj" / "from-the-first-build.o"
    leftover.write_text("object\n")
    untouched = workspace / "src" / "drivers" / "untouched.c"
    stamp = untouched.stat().st_mtime_ns
    time.sleep(0.05)

    messages.clear()
    third = _commit(tree, "return 7;", "seven")
    again = build_kernel(_spec(tree, third), progress=messages.append)
    assert "return 7" in again.image.read_text() and again.key != built.key
    assert any(m.startswith("workspace reused") for m in messages)
    # No Kconfig file changed and the config inputs are the same: .config is kept.
    assert "configuration unchanged since the last build here: kept" in messages
    assert again.config_value("TMPFS") == built.config_value("TMPFS")
    assert leftover.exists()  # the O= directory is the same one
    assert untouched.stat().st_mtime_ns == stamp  # unchanged files are not rewritten
    # Going back past the commit that added a file removes it from the workspace.
    older = build_kernel(_spec(tree, first))
    assert "return 0" in older.image.read_text()
    assert not untouched.exists()
    worktrees = run(["git", "-C", tree, "worktree", "list"]).stdout.strip().splitlines()
    assert len(worktrees) == 2 and str(workspace / "src") in worktrees[1]
    assert "return 7" in (tree / "init/main.c").read_text()  # the user's checkout is untouched
    assert run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip() == third
    # A commit that touches a Kconfig file is configured again.
    with (tree / "Kconfig").open("a") as kconfig:
        kconfig.write("config EXTRA\n\tbool \"extra\"\n")
    run(["git", "-C", tree, *GIT, "commit", "-qam", "kconfig"])
    head = run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()
    messages.clear()
    build_kernel(_spec(tree, head), progress=messages.append)
    assert not any(m.startswith("configuration unchanged") for m in messages)
    assert any(m.startswith("configuring") for m in messages)


def test_tarball_workspace_goes_back_to_pristine_between_series(
    tmp_path: Path, cache: Path
) -> None:
    tree = make_tree(tmp_path / "linux-6.12")
    tarball = tmp_path / "linux-6.12.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname="linux-6.12")
    patch = tmp_path / "one.patch"
    patch.write_text(diff("init/main.c", "\treturn 0;", "\treturn 1;"))
    patched = build_kernel(_spec(tarball, patches=patch))
    assert "return 1" in patched.image.read_text()
    messages: list[str] = []
    plain = build_kernel(_spec(tarball), progress=messages.append)
    assert "return 0" in plain.image.read_text()
    assert any(m.startswith("workspace reused") for m in messages)
    (workspace,) = (cache / "workspaces").iterdir()
    assert not (workspace / "src" / ".git").exists()  # setlocalversion must see no repo
    assert "return 0" in (workspace / "src" / "init/main.c").read_text()


SLOW_RECIPE = "\tsh -c 'sleep {n} & sleep {n}; wait' & echo $$! > {started}; wait\n"


def _slow_tree(root: Path, started: Path, seconds: int) -> Path:
    """A git tree whose compile step starts grandchildren that sleep (make's compilers)."""
    tree = make_tree(root, git=True)
    makefile = (tree / "Makefile").read_text().replace(
        "bzImage modules vmlinux:\n",
        "bzImage modules vmlinux:\n" + SLOW_RECIPE.format(n=seconds, started=started), 1)
    (tree / "Makefile").write_text(makefile)
    run(["git", "-C", tree, *GIT, "commit", "-qam", "slow"])
    return tree


def _sleepers(seconds: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", str(seconds).encode()]:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_signal_stops_the_whole_build_and_leaves_nothing(
    tmp_path: Path, cache: Path, sig: signal.Signals
) -> None:
    seconds = 6000 + os.getpid() % 1000 + (1000 if sig == signal.SIGTERM else 0)
    started = tmp_path / "started"
    tree = _slow_tree(tmp_path / "linux", started, seconds)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprolab.cli", "build-kernel",
         f"build:{tree}+reprolab=no", "--artifacts", str(tmp_path / "art")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (started.exists() and len(_sleepers(seconds)) >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow compile never started"
            time.sleep(0.1)
        assert run(["git", "-C", tree, "worktree", "list"]).stdout.count("\n") == 2
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert _sleepers(seconds) == []  # make's compilers went with it
    assert run(["git", "-C", tree, "worktree", "list"]).stdout.count("\n") == 1
    assert not list((cache / "workspaces").iterdir())
    assert not list((cache / "kernels").iterdir())
    assert (tmp_path / "art" / "build.log").is_file()
    assert list((cache / "build-logs").glob("*.log"))



def test_build_progress_in_a_log_is_plain_lines_with_an_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reprolab.cli import main

    tree = make_tree(tmp_path / "linux")
    assert main(["build-kernel", f"build:{tree}+reprolab=no"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"kernel build:{tree}+reprolab=no: estimate ")
    assert err[0].endswith("(a fresh small build)")
    assert "kernel: configuring (tinyconfig + 0 fragment(s))" in err
    assert any(line.startswith("kernel: built 6.12.0-fake in ") for line in err)
    assert not any("\x1b[" in line for line in err)  # no bar, no colours in a log
    # The next estimate comes from what this machine took.
    assert main(["build-kernel", f"build:{tree}+reprolab=no+config=defconfig"]) == 0
    assert capsys.readouterr().err.splitlines()[0].endswith("(median of 1 earlier build(s))")


OUTER = """
import sys
from reprolab.proc import run
run([sys.executable, "-m", "reprolab.cli", "build-kernel", sys.argv[1]])
"""


def test_interrupting_a_parent_reaches_the_build_it_runs(tmp_path: Path, cache: Path) -> None:
    """Ctrl-C of a program that runs `reprolab build-kernel` (a bisection runs its steps so):
    the parent ends the child's group with SIGTERM, and the child unwinds, ending make's."""
    seconds = 8000 + os.getpid() % 1000
    started = tmp_path / "started"
    tree = _slow_tree(tmp_path / "linux", started, seconds)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", OUTER, f"build:{tree}+reprolab=no"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (started.exists() and len(_sleepers(seconds)) >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow compile never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 10
    while _sleepers(seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers(seconds) == []
    assert run(["git", "-C", tree, "worktree", "list"]).stdout.count("\n") == 1
    assert not list((cache / "workspaces").iterdir())
