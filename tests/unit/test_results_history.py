"""`reprolab results`: past runs, the nightly diff and vmcore retention, on recorded runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprolab.case import CaseSpec
from reprolab.cli import EXIT_USER, main
from reprolab.run.attempt import AttemptResult
from reprolab.run.record import CaseResult, append_result
from reprolab.run.verdict import Outcome


def _record(run: Path, name: str, mode: str, outcomes: list[tuple[Outcome, str | None]],
            *, vmcore: bool = False) -> None:
    """Write a case's result the way a run does (the real writer, real attempt dirs)."""
    case = CaseSpec.from_marker(name, {"expect": {"kind": "panic"}, "mode": mode,
                                       "attempts": len(outcomes)})
    attempts = []
    for i, (outcome, sig) in enumerate(outcomes, 1):
        d = run / name.replace("::", "_") / f"attempt-{i:03d}"
        d.mkdir(parents=True)
        core = None
        if vmcore and sig:
            core = d / "vmcore.elf"
            with core.open("wb") as fh:
                fh.write(b"\x7fELF" + b"x" * 8192)
        attempts.append(AttemptResult(name, i, outcome, d, "tcg", title=sig and f"title {sig}",
                                      signature=sig, vmcore=core, duration=2.0))
    append_result(run, CaseResult(case, tuple(attempts)))


def _runs(root: Path) -> tuple[Path, Path]:
    old, new = root / "run-20260101-010000-aaaa", root / "run-20260102-010000-bbbb"
    hit, miss = Outcome.REPRODUCED, Outcome.NOT_REPRODUCED
    _record(old, "t.py::test_a", "reproduce", [(hit, "panic-a"), (miss, None)])
    _record(old, "t.py::test_b", "regression", [(hit, "lockup-b")])
    _record(new, "t.py::test_a", "reproduce", [(hit, "panic-a"), (hit, "panic-a")])
    _record(new, "t.py::test_c", "regression", [(hit, "hung-c"), (miss, None),
                                                (miss, None), (miss, None)])
    return old, new


def test_results_are_written_without_a_lock_file(tmp_path: Path) -> None:
    old, _new = _runs(tmp_path)
    assert sorted(p.name for p in old.iterdir() if p.is_file()) == ["results.jsonl"]


def test_compare_names_new_gone_and_still(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _runs(tmp_path)
    code = main(["results", str(new), "--compare", str(old), "--format", "json"])
    assert code == 1  # a new signature: CI should look
    diff = json.loads(capsys.readouterr().out)
    assert [(s["case"], s["signature"], s["count"], s["attempts"]) for s in diff["new"]] == [
        ("t.py::test_c", "hung-c", 1, 4)]
    assert diff["new"][0]["rate"] == 0.25
    assert [(s["case"], s["signature"]) for s in diff["gone"]] == [("t.py::test_b", "lockup-b")]
    [still] = diff["still"]
    assert (still["signature"], still["rate"], still["rate_before"]) == ("panic-a", 1.0, 0.5)
    changes = {c["case"]: (c["before"], c["now"]) for c in diff["verdict_changes"]}
    assert changes == {"t.py::test_b": ("reproduced", None),
                       "t.py::test_c": (None, "reproduced")}


def test_default_run_is_the_newest_and_compare_alone_is_the_previous(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _runs(tmp_path)
    assert main(["results", "--root", str(tmp_path), "--compare"]) == 1
    out = capsys.readouterr().out
    assert f"run {new}" in out and f"compared with {old}" in out
    assert "new: 1\n  hung-c: 1/4 (25%)  [t.py::test_c]" in out
    assert "still reproducing: 1\n  panic-a: 2/2 (100%), before 1/2 (50%)" in out
    # Nothing to compare the oldest run with.
    assert main(["results", "--root", str(tmp_path), old.name, "--compare"]) == EXIT_USER
    assert "no run before" in capsys.readouterr().err


def test_results_json_of_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _old, new = _runs(tmp_path)
    assert main(["results", str(new), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False  # test_c reproduced in regression mode
    assert [c["case"] for c in data["cases"]] == ["t.py::test_a", "t.py::test_c"]


def test_not_a_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", str(tmp_path / "nope")]) == EXIT_USER
    err = capsys.readouterr().err
    assert "is not a run" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "run-bad"
    bad.mkdir()
    (bad / "results.jsonl").write_text("{not json\n")
    assert main(["results", str(bad)]) == EXIT_USER
    assert "is not JSON lines" in capsys.readouterr().err


def test_prune_keeps_failing_runs_and_the_newest_passing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hit, miss = Outcome.REPRODUCED, Outcome.NOT_REPRODUCED
    names = [f"run-2026010{i}-010000-0000" for i in range(1, 5)]
    for i, name in enumerate(names):
        run = tmp_path / name
        # Night 3 failed: its regression case reproduced. The others passed.
        _record(run, "t.py::test_smoke", "reproduce", [(hit, "panic")], vmcore=True)
        _record(run, "t.py::test_reg", "regression",
                [(hit, "lockup")] if i == 2 else [(miss, None)], vmcore=True)
    assert main(["results", "--root", str(tmp_path), "--prune-vmcores", "1"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 vmcore(s)" in out
    cores = {p.relative_to(tmp_path).parts[0] for p in tmp_path.glob("*/*/*/vmcore.elf")}
    assert cores == {names[2], names[3]}  # the failing night, and the newest passing one
    for pruned in names[:2]:
        note = (tmp_path / pruned / "vmcores-pruned.txt").read_text()
        assert "attempt-001/vmcore.elf: removed" in note
        assert (tmp_path / pruned / "results.jsonl").exists()
    assert main(["results", "--root", str(tmp_path), "--prune-vmcores", "-1"]) == EXIT_USER
