"""Source identity: cheap, content-based, and strict about what is a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_tree import make_tree

from reprolab.errors import UserError
from reprolab.kernel import source
from reprolab.kernel.spec import BuildSpec
from reprolab.proc import run


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPROLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tarball(tmp_path: Path, name: str) -> Path:
    make_tree(tmp_path / "linux-x")
    out = tmp_path / name
    run(["tar", "-cJf", out, "-C", tmp_path, "linux-x"])
    return out


def test_tarball_identity_is_content_hash_and_memoised(tmp_path: Path, cache: Path) -> None:
    tarball = _tarball(tmp_path, "my-kernel.tar.xz")
    first = source.locate(BuildSpec(source=str(tarball)))
    assert first.kind == "tarball"
    assert first.source_id.startswith("tar-")
    assert first.version == (6, 12)  # read from the Makefile inside: the name says nothing
    assert len(list((cache / "sources").glob("*.json"))) == 1
    assert source.locate(BuildSpec(source=str(tarball))) == first


def test_tarball_prepare_strips_the_top_directory(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path, "linux-6.12.3.tar.xz")
    src = source.locate(BuildSpec(source=str(tarball)))
    dest = tmp_path / "work" / "src"
    source.prepare(src, dest, log=tmp_path / "log")
    assert (dest / "Makefile").is_file()
    source.release(src, dest)
    assert not dest.exists()


def test_plain_tree_id_changes_with_content(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    one = source.locate(BuildSpec(source=str(tree)))
    assert one.kind == "tree"
    (tree / "init" / "main.o").write_bytes(b"object")  # build products do not count
    assert source.locate(BuildSpec(source=str(tree))).source_id == one.source_id
    (tree / "init" / "main.c").write_text("x\n")
    assert source.locate(BuildSpec(source=str(tree))).source_id != one.source_id


def test_git_tree_id_is_the_commit(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    head = run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()
    located = source.locate(BuildSpec(source=str(tree), commit="HEAD"))
    assert located.source_id == f"git-{head}"
    assert located.commit == head


@pytest.mark.parametrize(
    ("make_source", "needle"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a source tarball"),
    ],
)
def test_bad_paths(tmp_path: Path, make_source: object, needle: str) -> None:
    assert callable(make_source)
    with pytest.raises(UserError, match=needle):
        source.locate(BuildSpec(source=str(make_source(tmp_path))))


def test_commit_on_plain_tree_and_missing_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path / "linux")
    with pytest.raises(UserError, match="not a git tree"):
        source.locate(BuildSpec(source=str(tree), commit="v6.12"))
    monkeypatch.setattr(source, "DEBIAN_SRC_DIR", tmp_path)
    with pytest.raises(UserError, match=r"apt-get install linux-source-9\.9"):
        source.locate(BuildSpec(source="linux-source-9.9"))
