"""Replay bundles: round trip, and one-line errors naming the field at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reprolab import __version__
from reprolab.bundle import MANIFEST, file_hash, load_bundle, write_bundle
from reprolab.errors import UserError

XML = "<domain type='qemu'><name>rl-bisect-x</name></domain>"


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Any]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config").write_text("CONFIG_SMP=y\n")
    (src / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    (src / "debug.patch").write_text("--- a/y\n+++ b/y\n")
    return {
        "testcase": "testcases/test_sysrq.py::test_sysrq_crash",
        "kernel": {"source": "tree", "tree": "/src/linux", "fragments": ["a.config"]},
        "commit": "a" * 40,
        "patches": [src / "fix.patch", src / "debug.patch"],
        "config": src / "config",
        "cmdline": "console=ttyS0 panic=-1 softlockup_panic=1",
        "domain_xml": XML,
        "image_recipe_hash": "sha256:" + "b" * 64,
        "scenario": {"groups": 2000, "depth": 4},
        "seed": 1234,
        "options": {"attempts": 5, "until": "first-hit", "mode": "reproduce"},
    }


def test_round_trip(tmp_path: Path, parts: dict[str, Any]) -> None:
    out = tmp_path / "bundle"
    written = write_bundle(out, **parts)
    loaded = load_bundle(out)
    assert written == loaded
    assert loaded.testcase == parts["testcase"]
    assert loaded.kernel == parts["kernel"]
    assert loaded.commit == "a" * 40
    assert [p.name for p in loaded.patches] == ["01-fix.patch", "02-debug.patch"]
    assert loaded.patch_hashes == tuple(file_hash(p) for p in parts["patches"])
    assert loaded.config is not None and loaded.config.read_text() == "CONFIG_SMP=y\n"
    assert loaded.domain_xml is not None and loaded.domain_xml.read_text() == XML
    assert loaded.cmdline == parts["cmdline"]
    assert loaded.scenario == {"groups": 2000, "depth": 4}
    assert loaded.seed == 1234
    assert loaded.options["until"] == "first-hit"
    assert loaded.reprolab_version == __version__
    assert loaded.created


def test_minimal_bundle_and_domain_xml_from_file(tmp_path: Path) -> None:
    xml = tmp_path / "dom.xml"
    xml.write_text(XML)
    bundle = write_bundle(tmp_path / "b", testcase="t::x", kernel={"source": "stock"},
                          cmdline="", domain_xml=xml)
    assert (bundle.commit, bundle.patches, bundle.config, bundle.seed) == (None, (), None, None)
    assert bundle.domain_xml is not None and bundle.domain_xml.read_text() == XML


def _edit(directory: Path, **changes: Any) -> None:
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"seed": "12"}, "seed"),
        ({"seed": True}, "seed"),
        ({"testcase": ""}, "testcase"),
        ({"kernel": "stock"}, "kernel"),
        ({"scenario": [1]}, "scenario"),
        ({"patch_hashes": ["sha256:0"]}, "patch_hashes"),
        ({"patches": "01-fix.patch"}, "patches"),
        ({"config": "nope"}, "config"),
        ({"commit": 7}, "commit"),
        ({"format": 99}, "format"),
    ],
)
def test_validation_names_the_field(
    tmp_path: Path, parts: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, **parts)
    _edit(out, **changes)
    with pytest.raises(UserError, match=f"field '{field}'"):
        load_bundle(out)


def test_missing_field(tmp_path: Path, parts: dict[str, Any]) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, **parts)
    data = json.loads((out / MANIFEST).read_text())
    del data["cmdline"]
    (out / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(UserError, match="field 'cmdline' is missing"):
        load_bundle(out)


def test_edited_files_are_caught(tmp_path: Path, parts: dict[str, Any]) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, **parts)
    (out / "patches" / "02-debug.patch").write_text("changed\n")
    with pytest.raises(UserError, match="field 'patch_hashes' does not match"):
        load_bundle(out)
    write_bundle(out, **parts)
    (out / "config").write_text("CONFIG_SMP=n\n")
    with pytest.raises(UserError, match="field 'config_hash'"):
        load_bundle(out)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a replay bundle"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("[]")
    with pytest.raises(UserError, match="not a JSON object"):
        load_bundle(tmp_path)


def test_missing_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="patch"):
        write_bundle(tmp_path / "b", testcase="t", kernel={}, cmdline="",
                     patches=[tmp_path / "missing.patch"])
    with pytest.raises(UserError, match=r"\.config"):
        write_bundle(tmp_path / "b", testcase="t", kernel={}, cmdline="",
                     config=tmp_path / "missing")
