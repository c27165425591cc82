"""`reprolab cache prune`: size and age budgets, never an entry locked or in use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from reprolab.cachemgmt import entries, parse_age, parse_size
from reprolab.cli import EXIT_USER, main

DAY = 86400.0


def _entry(cache: Path, section: str, name: str, mib: int, age_days: float,
           *extras: str) -> Path:
    base = cache / section
    base.mkdir(parents=True, exist_ok=True)
    path = base / name
    path.mkdir()
    (path / "blob").write_bytes(os.urandom(mib << 20))
    for extra in extras:
        (base / f"{name}{extra}").mkdir()
        (base / f"{name}{extra}" / "obj").write_bytes(os.urandom(1 << 20))
    (base / f"{name}.lock").touch()
    stamp = time.time() - age_days * DAY
    for p in (path, *(base / f"{name}{e}" for e in extras)):
        os.utime(p, (stamp, stamp))
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(root))
    _entry(root, "kernels", "build-6.12-old", 3, 20, ".work")
    _entry(root, "kernels", "stock-6.1.0-57-amd64-x", 1, 10)
    _entry(root, "images", "minimal-new", 2, 1)
    return root


def _prune(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["cache", "prune", "--format", "json", *args]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_entries_group_build_trees_with_their_kernel(cache: Path) -> None:
    listed = {e.path.name: e for e in entries()}
    assert sorted(listed) == ["build-6.12-old", "minimal-new", "stock-6.1.0-57-amd64-x"]
    old = listed["build-6.12-old"]
    assert [p.name for p in old.extras] == ["build-6.12-old.work"]
    assert old.size >= 4 << 20  # the build tree counts with the kernel


def test_age_budget_removes_old_entries_with_their_trees(
        cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _prune(capsys, "--max-age", "7d")
    assert sorted(Path(str(p)).name for p in out["removed"]) == [  # type: ignore[attr-defined]
        "build-6.12-old", "stock-6.1.0-57-amd64-x"]
    assert sorted(p.name for p in (cache / "kernels").iterdir()) == [
        "build-6.12-old.lock", "stock-6.1.0-57-amd64-x.lock"]
    assert (cache / "images" / "minimal-new").is_dir()


def test_size_budget_removes_oldest_first(cache: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = _prune(capsys, "--max-size", "4M", "--dry-run")
    assert [Path(str(p)).name for p in out["removed"]] == ["build-6.12-old"]  # type: ignore[attr-defined]
    assert (cache / "kernels" / "build-6.12-old").is_dir()  # dry run
    out = _prune(capsys, "--max-size", "4M")
    assert not (cache / "kernels" / "build-6.12-old").exists()
    assert not (cache / "kernels" / "build-6.12-old.work").exists()
    assert (cache / "kernels" / "stock-6.1.0-57-amd64-x").is_dir()


def test_locked_entry_is_kept(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = FileLock(str(cache / "kernels" / "build-6.12-old.lock"))
    # Another process holds it (a build in progress), exactly as the builders do.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)",
         lock.lock_file], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        out = _prune(capsys, "--max-age", "7d")
    finally:
        holder.kill()
        holder.wait()
    assert [Path(str(p)).name for p in out["removed"]] == ["stock-6.1.0-57-amd64-x"]  # type: ignore[attr-defined]
    [skipped] = out["skipped"]  # type: ignore[misc]
    assert "locked" in skipped["why"]
    assert (cache / "kernels" / "build-6.12-old").is_dir()


def test_entry_booted_by_a_running_process_is_kept(
        cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = cache / "kernels" / "stock-6.1.0-57-amd64-x" / "bzImage"
    # A process with the path on its command line, as QEMU has -kernel PATH.
    guest = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              f"file={kernel},if=none"])
    try:
        out = _prune(capsys, "--max-age", "7d")
    finally:
        guest.kill()
        guest.wait()
    assert [Path(str(p)).name for p in out["removed"]] == ["build-6.12-old"]  # type: ignore[attr-defined]
    assert "running process" in out["skipped"][0]["why"]  # type: ignore[index]


def test_budget_is_required_and_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune"]) == EXIT_USER
    assert "give a budget" in capsys.readouterr().err
    assert main(["cache", "prune", "--max-size", "lots"]) == EXIT_USER
    assert parse_size("20G") == 20 << 30 and parse_size("500MiB") == 500 << 20
    assert parse_age("12h") == 12 * 3600 and parse_age("3") == 3 * DAY
