"""``reprolab match``: a field log in, the bundled case that reproduces it out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprolab.cli import EXIT_USER, main
from reprolab.commands.match import EXIT_NO_MATCH, field_signature, rank

FIELD = Path(__file__).resolve().parents[1] / "data" / "field"
EL7 = FIELD / "el7-3.10-hard-lockup-cpu50-with-crash-bt.log"
#: The positive control on the field-bug kernel: the case that brings the bug back.
CFS = "testcases/test_cfs_unthrottle_hard_lockup.py::test_cfs_unthrottle_hard_lockup_field_kernel"


def test_el7_field_report_points_to_the_cfs_bandwidth_case(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 item 4: the 3.10 el7 hard lockup with crash's exception RIP."""
    assert main(["match", "--format", "json", str(EL7)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["signature"]["kind"] == "hard-lockup"
    assert out["signature"]["stuck_in"] == "tg_unthrottle_up"
    assert out["candidates"][0]["case"].endswith(CFS)
    assert out["best"] == "reprolab repro " + out["candidates"][0]["case"]
    # Nothing of another kind is offered.
    assert all("sysrq" not in c["case"] for c in out["candidates"])
    assert main(["match", str(EL7)]) == 0
    text = capsys.readouterr().out
    assert "best: reprolab repro" in text and "test_cfs_unthrottle_hard_lockup" in text


def test_crash_bt_alone_is_enough() -> None:
    bt = EL7.read_text().split("crash> bt", 1)[1]
    sig = field_signature(bt.encode())
    assert sig.kind is None and sig.stuck_in == "tg_unthrottle_up"
    assert "walk_tg_tree_from" in sig.frames
    cases = [{"nodeid": "t.py::test_cfs", "name": "test_cfs", "mode": "regression",
              "kernel": "stock", "expect": {"kind": "hard-lockup", "in_stack": "tg_unthrottle_up"}}]
    assert [c.nodeid for c in rank(sig, cases)] == ["t.py::test_cfs"]


def _case(name: str, mode: str, kernel: str, expect: dict[str, str]) -> dict[str, object]:
    return {"nodeid": f"t.py::{name}", "name": name, "mode": mode, "kernel": kernel,
            "expect": expect}


def test_patched_reproduce_cases_rank_above_regression_and_controls() -> None:
    sig = field_signature(EL7.read_bytes())
    want = {"kind": "hard-lockup", "in_stack": "tg_unthrottle_up"}
    cases = [
        _case("test_cfs_regression", "regression", "build:linux-source-6.12", want),
        _case("test_cfs_negative", "regression",
              "build:linux-source-6.12+patches=testcases/patches/cfs", want),
        _case("test_cfs_positive", "reproduce",
              "build:linux-source-6.12+patches=testcases/patches/cfs", want),
        _case("test_soft", "reproduce", "stock", {"kind": "soft-lockup"}),
        _case("test_other_frame", "reproduce", "stock",
              {"kind": "hard-lockup", "in_stack": "lkdtm_HARDLOCKUP"}),
        _case("test_title", "reproduce", "stock", {"title": "kernel panic: .*"}),
    ]
    ranked = [c.nodeid.split("::")[1] for c in rank(sig, cases)]
    assert ranked == ["test_cfs_positive", "test_cfs_regression", "test_cfs_negative",
                      "test_other_frame"]


def test_collects_markers_with_pytest_in_a_subprocess(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "test_field.py").write_text(
        "import pytest\n"
        "SIG = {'kind': 'hard-lockup', 'in_stack': 'tg_unthrottle_up'}\n"
        "@pytest.mark.reprolab(expect=SIG, mode='regression')\n"
        "def test_regression(guest): pass\n"
        "@pytest.mark.parametrize('n', [pytest.param(1, marks=pytest.mark.reprolab(\n"
        "    expect=SIG, mode='reproduce', kernel='build:linux-source-6.12+patches=p'))])\n"
        "def test_positive(guest, n): pass\n"
    )
    (cases / "test_broken.py").write_text("import no_such_module_here\n")
    assert main(["match", "--cases", str(cases), "--format", "json", str(EL7)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["case"].split("::")[1] for c in out["candidates"]] == [
        "test_positive[1]", "test_regression"]


def test_no_match_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "test_x.py").write_text(
        "import pytest\n@pytest.mark.reprolab(expect={'kind': 'panic'})\n"
        "def test_x(guest): pass\n")
    assert main(["match", "--cases", str(cases), str(EL7)]) == EXIT_NO_MATCH
    assert "no bundled test case reproduces hard-lockup:tg_unthrottle_up" in \
        capsys.readouterr().out
    boring = tmp_path / "boot.log"
    boring.write_bytes((FIELD / "openbmc-u-boot-15-boot-noise.log").read_bytes())
    assert main(["match", "--cases", str(cases), str(boring)]) == EXIT_USER
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to match" in err[0]
    assert main(["match", str(tmp_path / "missing.log")]) == EXIT_USER
    assert "cannot read log" in capsys.readouterr().err
