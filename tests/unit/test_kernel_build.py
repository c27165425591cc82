"""The cached build flow on a miniature tree whose Makefile answers kbuild's targets.

What is tested is reprolab's side: cache keys and hits, one build under parallel callers,
logs kept where the user looks, and errors in the right family (untestable when
bisecting). Compiling a real kernel is tests/integration/test_kernel_build.py.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from kernel_tree import diff, make_tree

from reprolab.errors import UntestableError, UserError
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.build import build_kernel, compute_key
from reprolab.kernel.patches import PatchError
from reprolab.kernel.resolve import resolve_kernel
from reprolab.kernel.spec import BuildSpec, parse_kernel_spec
from reprolab.proc import run


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(path))
    return path


@pytest.fixture
def fragment(tmp_path: Path) -> Path:
    frag = tmp_path / "shmem.config"
    frag.write_text("# tmpfs for /tmp\nCONFIG_SHMEM=y\nCONFIG_TMPFS=y\n")
    return frag


def _spec(tree: Path, fragment: Path, **extra: str) -> BuildSpec:
    text = f"build:{tree}+fragment={fragment}+reprolab=no"
    for key, value in extra.items():
        text += f"+{key}={value}"
    spec = parse_kernel_spec(text).build
    assert spec is not None
    return spec


def test_build_then_cache_hit(tmp_path: Path, fragment: Path, cache: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    messages: list[str] = []
    kernel = build_kernel(_spec(tree, fragment), artifacts_dir=tmp_path / "art",
                          progress=messages.append)
    assert kernel.origin == "build"
    assert kernel.release == "6.12.0-fake"
    assert kernel.image.is_file() and kernel.vmlinux is not None and kernel.vmlinux.is_file()
    assert kernel.modules_dir.is_dir()
    assert not (kernel.modules_dir / "build").is_symlink()  # it pointed into the work dir
    assert kernel.modules_root.parent == cache / "kernels" / kernel.key
    assert kernel.config_value("TMPFS") == "y"
    assert (tmp_path / "art" / "build.log").is_file()
    meta = json.loads((kernel.image.parent / "meta.json").read_text())
    assert meta["release"] == "6.12.0-fake"
    assert not list((cache / "kernels").glob("*.work"))
    again: list[str] = []
    assert build_kernel(_spec(tree, fragment), progress=again.append) == kernel
    assert any(m.startswith("cache hit") for m in again)


def test_key_follows_source_patches_and_config(tmp_path: Path, fragment: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    base, *_ = compute_key(_spec(tree, fragment))
    patches = tmp_path / "p.patch"
    patches.write_text(diff("init/main.c", "\treturn 0;", "\treturn 1;"))
    assert compute_key(_spec(tree, fragment, patches=str(patches)))[0].digest != base.digest
    assert compute_key(_spec(tree, fragment, config="defconfig"))[0].digest != base.digest
    (tree / "init/main.c").write_text("changed\n")
    assert compute_key(_spec(tree, fragment))[0].digest != base.digest
    assert base.name.startswith("build-6.12-")


def _build_in_process(tree: str, fragment: str, cache: str) -> str:
    import os

    os.environ["REPROLAB_CACHE"] = cache
    messages: list[str] = []
    spec = parse_kernel_spec(f"build:{tree}+fragment={fragment}+reprolab=no").build
    assert spec is not None
    build_kernel(spec, progress=messages.append)
    return "built" if any(m.startswith("built ") for m in messages) else "waited"


def test_parallel_callers_build_once(tmp_path: Path, fragment: Path, cache: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_build_in_process, [str(tree)] * 3, [str(fragment)] * 3,
                                [str(cache)] * 3))
    assert sorted(results) == ["built", "waited", "waited"]


def test_option_that_does_not_land_names_its_dependency(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    frag = tmp_path / "typo.config"
    frag.write_text("CONFIG_TMPFS=y\n")
    with pytest.raises(UserError) as info:
        build_kernel(_spec(tree, frag), artifacts_dir=tmp_path / "art")
    message = str(info.value)
    assert message.startswith("CONFIG_TMPFS=y (typo.config:1) did not land, got n: ")
    assert "unmet dependency SHMEM" in message
    log = (tmp_path / "art" / "build.log").read_text()
    assert "config verification failed" in log


def test_compiler_error_is_one_line_and_untestable_when_bisecting(
    tmp_path: Path, fragment: Path, cache: Path
) -> None:
    tree = make_tree(tmp_path / "linux")
    broken = tmp_path / "broken.patch"
    broken.write_text(diff("init/main.c", "\treturn 0;", "\tBROKEN"))
    spec = _spec(tree, fragment, patches=str(broken))
    with pytest.raises(UserError) as info:
        build_kernel(spec, artifacts_dir=tmp_path / "art")
    assert not isinstance(info.value, UntestableError)
    assert str(info.value).startswith(
        "kernel build failed: init/main.c:1:1: error: expected ; before }"
    )
    assert "build.log" in str(info.value) or "build-logs" in str(info.value)
    assert (tmp_path / "art" / "build.log").is_file()
    # No cache entry holding only a log and a lock: the log is kept where the error says.
    assert not list((cache / "kernels").iterdir())
    assert str(cache / "build-logs" / f"{compute_key(spec)[0].name}.log") in str(info.value)
    with pytest.raises(UntestableError, match=r"^untestable: kernel build failed"):
        build_kernel(spec, bisecting=True)
    assert not (cache / "kernels" / compute_key(spec)[0].name / "meta.json").exists()


def test_patch_that_does_not_apply_is_untestable_when_bisecting(
    tmp_path: Path, fragment: Path
) -> None:
    tree = make_tree(tmp_path / "linux")
    stale = tmp_path / "stale.patch"
    stale.write_text(diff("init/main.c", "\treturn 9;", "\treturn 1;"))
    spec = _spec(tree, fragment, patches=str(stale))
    with pytest.raises(PatchError, match=r"stale\.patch does not apply at init/main\.c"):
        build_kernel(spec)
    with pytest.raises(UntestableError, match=r"stale\.patch does not apply"):
        build_kernel(spec, bisecting=True)


def test_git_tree_at_commit_leaves_the_checkout_alone(tmp_path: Path, fragment: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    first = run(["git", "-C", tree, "rev-parse", "HEAD"]).stdout.strip()
    (tree / "init/main.c").write_text("int main(void)\n{\n\treturn 5;\n}\n")
    run(["git", "-C", tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "5"])
    kernel = build_kernel(_spec(tree, fragment).__class__(
        source=str(tree), commit=first[:10], fragments=(fragment,), reprolab_fragments=False))
    assert "return 0" in kernel.image.read_text()
    assert "return 5" in (tree / "init/main.c").read_text()
    # One worktree besides the user's: the build workspace, reused by the next commit.
    worktrees = run(["git", "-C", tree, "worktree", "list"]).stdout.strip().splitlines()
    assert len(worktrees) == 2 and "/workspaces/" in worktrees[1]
    # Uncommitted changes are part of what a tree built "as checked out" means.
    (tree / "init/main.c").write_text("int main(void)\n{\n\treturn 6;\n}\n")
    dirty = build_kernel(_spec(tree, fragment))
    assert "return 6" in dirty.image.read_text()
    assert "-dirty-" in json.loads((dirty.image.parent / "meta.json").read_text())["source_id"]


def test_bad_sources_are_one_line_user_errors(tmp_path: Path, fragment: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    with pytest.raises(UserError, match=r"commit 'nosuchcommit' does not exist in"):
        build_kernel(BuildSpec(source=str(tree), commit="nosuchcommit"))
    notkernel = tmp_path / "notkernel"
    notkernel.mkdir()
    (notkernel / "README").write_text("hello\n")
    with pytest.raises(UserError, match=r"is not a Linux kernel tree \(missing Makefile"):
        build_kernel(BuildSpec(source=str(notkernel)))
    with pytest.raises(UserError, match="does not exist"):
        build_kernel(BuildSpec(source=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match=r"config fragment .*nope.config does not exist"):
        build_kernel(BuildSpec(source=str(tree), fragments=(tmp_path / "nope.config",)))


def test_resolve_stock_and_build(tmp_path: Path, fragment: Path) -> None:
    if not list(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("host has no /boot/vmlinuz-* (linux-image-amd64 not installed)")
    stock = resolve_kernel("stock")
    assert isinstance(stock, KernelArtifacts) and stock.origin == "stock"
    tree = make_tree(tmp_path / "linux")
    built = resolve_kernel(parse_kernel_spec(f"build:{tree}+fragment={fragment}+reprolab=no"))
    assert built.origin == "build"


def test_cli_build_kernel(tmp_path: Path, fragment: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from reprolab.cli import main

    tree = make_tree(tmp_path / "linux")
    spec = f"build:{tree}+fragment={fragment}+reprolab=no"
    assert main(["build-kernel", spec, "--json", "--artifacts", str(tmp_path / "art")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["origin"] == "build" and info["release"] == "6.12.0-fake"
    assert Path(info["modules_dir"]).is_dir()
    assert (tmp_path / "art" / "build.log").is_file()
    assert main(["build-kernel", "build:linux-source-6.12+flavour=rt"]) == 2
    assert "unknown key 'flavour'" in capsys.readouterr().err
    broken = tmp_path / "broken.patch"
    broken.write_text(diff("init/main.c", "\treturn 0;", "\tBROKEN"))
    assert main(["build-kernel", f"{spec}+patches={broken}", "--bisect"]) == 125
    assert "untestable: kernel build failed" in capsys.readouterr().err


def test_garbage_fragment_is_reported_before_the_source_is_touched(
        tmp_path: Path, cache: Path) -> None:
    """The fragment is parsed first: with a source that does not even exist, the error is
    still the fragment's line, and no cache entry or work directory was started."""
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_SMP=y\nthis is not kconfig\n")
    for source in (str(tmp_path / "nowhere.tar.xz"), "linux-source-6.12"):
        with pytest.raises(UserError, match=r"bad\.config:2: not a config fragment line"):
            build_kernel(BuildSpec(source=source, fragments=(bad,)))
    with pytest.raises(UserError, match=r"bad\.config:2: not a config fragment line"):
        build_kernel(BuildSpec(source="linux-source-6.12", base_config=bad))
    assert not (cache / "kernels").exists() or not any((cache / "kernels").iterdir())
    assert not (cache / "sources").exists()
