"""Bundles as untrusted input (issue 16 item 2): each reproduction from the issue, rejected
with one line naming the manifest key, before anything is imported, built or written."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from reprolab.bundle import MANIFEST, file_hash, load_bundle, write_bundle
from reprolab.case import CaseSpec
from reprolab.cli import EXIT_USER, main
from reprolab.errors import UserError
from reprolab.replay import replay_plan
from reprolab.run.boot import safe_name as _safe
from reprolab.run.session import Session

SENTINEL_CODE = '''
import pathlib
pathlib.Path({sentinel!r}).write_text("imported")
'''

CASE = '''
import pytest


@pytest.mark.reprolab(kernel="build:linux-source-6.12", expect={{"kind": "panic"}})
def test_case(guest):
    pass
{extra}
'''


def _casefile(directory: Path, extra: str = "") -> Path:
    path = directory / "test_hostile_case.py"
    path.write_text(textwrap.dedent(CASE.format(extra=extra)))
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config").write_text("CONFIG_SMP=y\n")
    (src / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    case = _casefile(src)
    out = tmp_path / "bundle"
    write_bundle(out, testcase=f"{case}::test_case",
                 kernel={"source": "linux-source-6.12", "base_config": "tinyconfig"},
                 cmdline="console=ttyS0", commit=None, patches=[src / "fix.patch"],
                 config=src / "config", domain_xml="<domain/>",
                 options={"testfile": str(case), "testfile_hash": file_hash(case)},
                 testfile=case)
    return out


def _edit(directory: Path, **changes: Any) -> None:
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_only_the_manifests_patches_are_applied(bundle: Path, tmp_path: Path) -> None:
    """Extra files in patches/ and a planted series file are never read."""
    (bundle / "patches" / "00-evil.patch").write_text("--- a/Makefile\n+++ b/Makefile\n")
    (bundle / "patches" / "series").write_text("00-evil.patch\n01-fix.patch\n")
    staging = tmp_path / "staging"
    plan = replay_plan(bundle, staging=staging)
    assert plan.kernel.build is not None and plan.kernel.build.patches == staging / "patches"
    assert (staging / "patches" / "series").read_text() == "0001.patch\n"
    assert (staging / "patches" / "0001.patch").read_text() == "--- a/x\n+++ b/x\n"
    assert sorted(p.name for p in (staging / "patches").iterdir()) == ["0001.patch", "series"]


@pytest.mark.parametrize(("changes", "key", "why"), [
    ({"patches": ["../../../../etc/passwd"]}, "patches", "without '..'"),
    ({"patches": ["/etc/passwd"]}, "patches", "absolute"),
    ({"config": "/etc/passwd"}, "config", "absolute"),
    ({"domain_xml": "/etc/shadow"}, "domain_xml", "absolute"),
    ({"domain_xml": "./domain.xml"}, "domain_xml", "normalised"),
    ({"testfile": "testfile/../../src/x.py"}, "testfile", "without '..'"),
    ({"config_hash": None}, "config_hash", "is missing"),
    ({"config_hash": KeyError}, "config_hash", "is missing"),
    ({"domain_xml_hash": None}, "domain_xml_hash", "is missing"),
    ({"patch_hashes": ["md5:0"]}, "patch_hashes", "sha256"),
    ({"testfile_hash": "sha256:" + "0" * 64}, "testfile_hash", "does not match"),
    ({"carried": {"bzImage": {"path": "/boot/vmlinuz", "sha256": "x"}}},
     "carried.bzImage.path", "absolute"),
    ({"carried": {"evil": {}}}, "carried.evil", "is not one of"),
])
def test_hostile_manifests_are_one_line_errors_naming_the_key(
        bundle: Path, changes: dict[str, Any], key: str, why: str) -> None:
    _edit(bundle, **changes)
    with pytest.raises(UserError, match=f"field '{key}'") as info:
        load_bundle(bundle)
    assert why in str(info.value)
    assert "\n" not in str(info.value)


def test_symlinks_out_of_the_bundle_are_refused(bundle: Path) -> None:
    (bundle / "config").unlink()
    os.symlink("/etc/passwd", bundle / "config")
    with pytest.raises(UserError, match="field 'config' names config, a symlink leading out"):
        load_bundle(bundle)
    # A symlink that stays inside is only a path; its hash still decides.
    (bundle / "config").unlink()
    (bundle / "real-config").write_text("CONFIG_SMP=y\n")
    os.symlink("real-config", bundle / "config")
    assert load_bundle(bundle).config == bundle / "config"


def test_edited_domain_xml_is_caught(bundle: Path) -> None:
    (bundle / "domain.xml").write_text("<domain><devices><disk file='/etc/shadow'/>"
                                       "</devices></domain>")
    with pytest.raises(UserError, match="field 'domain_xml_hash' does not match"):
        load_bundle(bundle)


def test_testcase_dotdot_stays_under_the_artifacts_root(tmp_path: Path) -> None:
    assert _safe("..") == "case" and _safe(".") == "case"
    assert _safe("../../etc") == "etc"
    artifacts = tmp_path / "artifacts"
    session = Session(artifacts=artifacts)
    try:
        for name in ("..", "../..", "/etc", ".hidden/../.."):
            directory = session.attempt_dir(CaseSpec.from_marker(name, {"expect": {
                "kind": "panic"}}), 1)
            assert directory.resolve().is_relative_to(artifacts.resolve()), name
    finally:
        session.close()


def test_testfile_is_verified_before_import(bundle: Path, tmp_path: Path) -> None:
    """options.testfile naming another .py is never imported: the hashed copy is."""
    sentinel = tmp_path / "imported-evil"
    evil = tmp_path / "test_evil.py"
    evil.write_text(_casefile(tmp_path / "src").read_text()
                    + SENTINEL_CODE.format(sentinel=str(sentinel)))
    data = json.loads((bundle / MANIFEST).read_text())
    data["options"]["testfile"] = str(evil)
    (bundle / MANIFEST).write_text(json.dumps(data))
    plan = replay_plan(bundle, staging=tmp_path / "s1")
    assert not sentinel.exists()
    assert plan.loaded.path == (bundle / "testfile" / "test_hostile_case.py").resolve()

    # A bundle that does not list its test file needs --trust before anything is imported.
    _edit(bundle, testfile=None, testfile_hash=None)
    with pytest.raises(UserError, match=r"field 'testfile' is missing.*--trust"):
        replay_plan(bundle, staging=tmp_path / "s2")
    assert not sentinel.exists()
    replay_plan(bundle, staging=tmp_path / "s3", trust=True)
    assert sentinel.read_text() == "imported"


def test_bundled_testfile_edited_is_not_imported(bundle: Path, tmp_path: Path) -> None:
    sentinel = tmp_path / "imported-edited"
    copy = bundle / "testfile" / "test_hostile_case.py"
    copy.write_text(copy.read_text() + SENTINEL_CODE.format(sentinel=str(sentinel)))
    with pytest.raises(UserError, match="field 'testfile_hash' does not match"):
        replay_plan(bundle, staging=tmp_path / "s")
    assert not sentinel.exists()


def test_cli_reports_one_line_naming_the_key(bundle: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _edit(bundle, config="../../../../etc/passwd")
    assert main(["repro", "--bundle", str(bundle), "--artifacts", str(tmp_path / "a")]) \
        == EXIT_USER
    err = capsys.readouterr().err.strip()
    assert "field 'config'" in err and len(err.splitlines()) == 1
    assert main(["repro", "tests/x.py", "--trust"]) == EXIT_USER
    assert "--trust only applies to --bundle" in capsys.readouterr().err


def test_rebuilding_from_an_unhashed_tree_needs_trust(bundle: Path, tmp_path: Path) -> None:
    """A rebuild runs the named tree's Makefiles: a tree path a bundle names is not hashed."""
    from reprolab.replay import check_rebuild_source

    check_rebuild_source(replay_plan(bundle, staging=tmp_path / "s0"), trust=False)
    _edit(bundle, kernel={"source": str(tmp_path / "evil-tree"), "base_config": "tinyconfig"})
    plan = replay_plan(bundle, staging=tmp_path / "s1")
    with pytest.raises(UserError, match=r"field 'kernel\.source' names .*evil-tree.*--trust"):
        check_rebuild_source(plan, trust=False)
    check_rebuild_source(plan, trust=True)
