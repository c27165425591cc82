"""Patch series: order, quilt series files, and failures that name patch and file."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_tree import diff, make_tree

from reprolab.errors import UserError
from reprolab.kernel.patches import Patch, PatchError, apply, collect, failing_file, hashes

GOOD = diff("init/main.c", "\treturn 0;", "\treturn 1;")
SECOND = diff("init/main.c", "\treturn 1;", "\treturn 2;")
STALE = diff("init/main.c", "\treturn 7;", "\treturn 8;")
MISSING = diff("init/nothere.c", "\treturn 0;", "\treturn 1;")


def _series(tmp_path: Path, **patches: str) -> Path:
    d = tmp_path / "series.d"
    d.mkdir()
    for name, text in patches.items():
        (d / name.replace("_", "-")).write_text(text)
    return d


def test_directory_in_name_order_ignores_other_files(tmp_path: Path) -> None:
    d = _series(tmp_path, **{"0002_b.patch": SECOND, "0001_a.patch": GOOD, "README": "x"})
    assert [p.path.name for p in collect(d)] == ["0001-a.patch", "0002-b.patch"]


def test_quilt_series_file_order_comments_and_strip(tmp_path: Path) -> None:
    d = _series(tmp_path, **{"a.patch": GOOD, "b.patch": SECOND})
    (d / "series").write_text("# quilt\nb.patch -p0\n\na.patch # first really\n")
    assert collect(d) == (Patch(d / "b.patch", 0), Patch(d / "a.patch", 1))
    assert collect(d / "series") == collect(d)


@pytest.mark.parametrize(
    ("content", "needle"),
    [("gone.patch\n", "gone.patch does not exist"), ("a.patch --fuzz=3\n", "unsupported"),
     ("# nothing\n", "lists no patches")],
)
def test_bad_series(tmp_path: Path, content: str, needle: str) -> None:
    d = _series(tmp_path, **{"a.patch": GOOD})
    (d / "series").write_text(content)
    with pytest.raises(UserError, match=needle):
        collect(d)


def test_empty_or_missing_location(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no"):
        collect(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        collect(tmp_path / "nope")


def test_hashes_follow_content_order_and_strip(tmp_path: Path) -> None:
    d = _series(tmp_path, **{"a.patch": GOOD, "b.patch": SECOND})
    one = hashes(collect(d))
    assert one != list(reversed(one))
    (d / "b.patch").write_text(SECOND + " \n")
    assert hashes(collect(d))[1] != one[1]
    assert hashes((Patch(d / "a.patch", 0),)) != hashes((Patch(d / "a.patch", 1),))


@pytest.mark.parametrize("git", [False, True], ids=["patch", "git"])
def test_series_applies_in_order(tmp_path: Path, git: bool) -> None:
    tree = make_tree(tmp_path / "linux", git=git)
    d = _series(tmp_path, **{"1.patch": GOOD, "2.patch": SECOND})
    apply(tree, collect(d), use_git=git, log=tmp_path / "log")
    assert "\treturn 2;" in (tree / "init/main.c").read_text()
    assert "2.patch" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("git", [False, True], ids=["patch", "git"])
@pytest.mark.parametrize(
    ("bad", "file"), [(STALE, "init/main.c"), (MISSING, "init/nothere.c")],
    ids=["stale-hunk", "missing-file"],
)
def test_failure_names_patch_and_file(tmp_path: Path, git: bool, bad: str, file: str) -> None:
    tree = make_tree(tmp_path / "linux", git=git)
    d = _series(tmp_path, **{"1.patch": GOOD, "2_fix_irq.patch": bad})
    with pytest.raises(PatchError) as info:
        apply(tree, collect(d), use_git=git, log=tmp_path / "log")
    message = str(info.value)
    assert message.startswith(f"patch 2/2 2-fix-irq.patch does not apply at {file} (")
    assert "\n" not in message
    assert info.value.file == file
    assert isinstance(info.value, UserError)


def test_mbox_from_format_patch_applies_with_git(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    mbox = tmp_path / "0001-ret.mbox"
    mbox.write_text(
        "From 1234 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH] ret 1\n\n"
        "Commit message.\n---\n" + GOOD + "-- \n2.39.5\n"
    )
    apply(tree, collect(mbox), use_git=True, log=tmp_path / "log")
    assert "\treturn 1;" in (tree / "init/main.c").read_text()


def test_failing_file_parsers_on_real_tool_wording() -> None:
    git_out = (
        "error: patch failed: kernel/sched/fair.c:5123\n"
        "error: kernel/sched/fair.c: patch does not apply"
    )
    assert failing_file(git_out, use_git=True) == "kernel/sched/fair.c"
    patch_out = ("patching file init/main.c\npatching file kernel/sched/fair.c\n"
                 "Hunk #1 FAILED at 5123.\n1 out of 1 hunk FAILED -- saving rejects")
    assert failing_file(patch_out, use_git=False) == "kernel/sched/fair.c"
    assert failing_file("garbage", use_git=False) is None
