"""Attempt counts mean what they say: N attempts run unless first-hit is asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprolab.case import CaseSpec
from reprolab.cli import EXIT_USER, main
from reprolab.errors import UserError
from reprolab.run.attempt import AttemptResult
from reprolab.run.record import CaseResult
from reprolab.run.verdict import Observed, Outcome, classify

CASE_FILE = '''
import pytest

@pytest.mark.reprolab(expect={"kind": "panic"}, attempts=4, until="first-hit",
                      mode="reproduce")
def test_marked_first_hit(guest):
    pass

@pytest.mark.reprolab(expect={"kind": "panic"}, attempts=2)
def test_default(guest):
    pass

@pytest.mark.reprolab(guest={"vcpus": 1})
def test_explore(guest):
    pass
'''


def _case(**marker: object) -> CaseSpec:
    return CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, **marker})


def test_default_runs_every_attempt() -> None:
    case = _case(attempts=3)
    assert case.until == "all"
    assert not case.stops_after(hit=True)
    assert case.stop_rule() == "3 attempts, all run (until=all)"


def test_command_line_attempts_override_a_marker_first_hit() -> None:
    case = _case(attempts=5, until="first-hit")
    assert case.stops_after(hit=True)
    ran_all = case.with_attempt_rule(3, None)
    assert (ran_all.attempts, ran_all.until) == (3, "all")
    asked = case.with_attempt_rule(3, "first-hit")
    assert (asked.attempts, asked.until) == (3, "first-hit")
    assert asked.stop_rule() == "up to 3 attempts, stopping at the first hit (until=first-hit)"
    # No count on the command line: the marker's rule stands.
    assert case.with_attempt_rule(None, None).until == "first-hit"
    with pytest.raises(UserError, match="--attempts must be a positive integer"):
        case.with_attempt_rule(0, None)


def _attempt(index: int, outcome: Outcome, tmp: Path) -> AttemptResult:
    return AttemptResult("t", index, outcome, tmp / f"attempt-{index:03d}", "tcg", duration=1.0)


def test_result_says_why_fewer_attempts_ran(tmp_path: Path) -> None:
    case = _case(attempts=3, until="first-hit")
    result = CaseResult(case, (_attempt(1, Outcome.REPRODUCED, tmp_path),))
    assert result.stop_note == ("stopped at the first hit after 1 of 3 attempts "
                                "(until=first-hit)")
    data = result.to_json()
    assert (data["attempts"], data["planned_attempts"], data["until"]) == (1, 3, "first-hit")
    full = CaseResult(_case(attempts=2), (_attempt(1, Outcome.REPRODUCED, tmp_path),
                                          _attempt(2, Outcome.NOT_REPRODUCED, tmp_path)))
    assert full.stop_note == "2 attempts, all run (until=all)"


def test_exploration_case_never_hits_and_is_not_judged(tmp_path: Path) -> None:
    case = CaseSpec.from_marker("t", {"guest": {"vcpus": 1}})
    assert case.mode == "explore" and case.expect.empty
    crashed = Observed(crashed=True, title="kernel panic: x", kind="panic")
    assert classify(case.expect, crashed) is Outcome.OTHER_CRASH
    assert classify(case.expect, Observed(crashed=False)) is Outcome.NOT_REPRODUCED
    result = CaseResult(case, (_attempt(1, Outcome.OTHER_CRASH, tmp_path),))
    assert result.verdict == "explored" and result.hits == 0
    # --mode cannot turn an exploration into a judged case.
    assert case.with_mode("regression").mode == "explore"


def _list(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
          ) -> dict[str, dict[str, object]]:
    (tmp_path / "test_cases.py").write_text(CASE_FILE)
    assert main(["list", "--format", "json", *extra, str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    return {str(r["case"]).split("::")[-1]: r for r in rows}


def test_list_shows_the_rule_a_run_would_use(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rows = _list(tmp_path, capsys)
    assert (rows["test_marked_first_hit"]["attempts"],
            rows["test_marked_first_hit"]["until"]) == (4, "first-hit")
    assert (rows["test_default"]["attempts"], rows["test_default"]["until"]) == (2, "all")
    assert rows["test_explore"]["mode"] == "explore"
    assert rows["test_explore"]["expect"] == "(none: exploration)"
    # Through the plugin's own option handling: --attempts alone means all of them.
    rows = _list(tmp_path, capsys, "--attempts", "3")
    assert {(r["attempts"], r["until"]) for r in rows.values()} == {(3, "all")}
    rows = _list(tmp_path, capsys, "--attempts", "3", "--until", "first-hit")
    assert {(r["attempts"], r["until"]) for r in rows.values()} == {(3, "first-hit")}


def test_list_of_a_missing_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "/nonexistent/cases"]) == EXIT_USER
    err = capsys.readouterr().err
    assert "no test file or directory /nonexistent/cases" in err
    assert len(err.strip().splitlines()) == 1


def test_run_takes_the_plugins_options() -> None:
    from reprolab.cli import build_parser
    from reprolab.commands.run import plugin_args
    from reprolab.pytest_plugin import OPTIONS

    args = build_parser().parse_args(
        ["run", "--until", "first-hit", "--keep-guest", "--attempts", "3", "--mode",
         "reproduce", "--kernel", "stock", "--hosts", "qemu:///system", "testcases"])
    assert sorted(plugin_args(args)) == sorted([
        "--reprolab-until=first-hit", "--reprolab-keep-guest", "--reprolab-attempts=3",
        "--reprolab-mode=reproduce", "--reprolab-kernel=stock",
        "--reprolab-hosts=qemu:///system"])
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    for name, _kwargs, _help in OPTIONS:
        assert f"--{name}" in run_help


def test_run_options_may_follow_the_paths_and_pytest_args_follow_dashes() -> None:
    from reprolab.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["run", "testcases", "--attempts", "3", "--until", "all"])
    assert (args.paths, args.opt_attempts, args.opt_until) == (["testcases"], 3, "all")
    assert args.pytest_args == []
