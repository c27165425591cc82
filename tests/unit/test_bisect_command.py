"""``reprolab bisect`` end to end on a real git tree, with a seeded flaky oracle for guests.

The oracle is loaded by import path in the parent and in every ``git bisect run`` step
child, exactly as the VM oracle is, so the state hand-over between them is exercised too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
from git_tree import assert_reset, git_env, make_repo

from reprolab.bisect.driver import EXIT_USAGE, Outcome
from reprolab.bisect.oracles import attempt_outcome, parse_options, resolve_factory
from reprolab.commands import bisect as bisect_cmd
from reprolab.errors import Failure, InfraError, UserError
from reprolab.proc import run
from reprolab.run.attempt import AttemptResult
from reprolab.run.verdict import Outcome as Verdict

ORACLE = "flaky_oracle:from_context"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    git_env(monkeypatch)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reprolab")
    bisect_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _args(repo: Path, out: Path, good: str, bad: str, *extra: str) -> list[str]:
    return [
        "bisect", "testcases/test_example.py::test_lockup", "--tree", str(repo),
        "--good", good, "--bad", bad, "--out", str(out), "--oracle", ORACLE, *extra,
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_bisect_command_names_the_flaky_culprit(
    tmp_path: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "tree"
    shas = make_repo(repo, [None] * 4 + ["0.5"] * 4)
    out = tmp_path / "out"
    code = cli(_args(repo, out, shas[0], shas[-1], "--calibrate", "20",
                     "--oracle-opt", f"seed={seed}"))
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["culprit"] == shas[4]
    assert report["subject"] == "commit 5"
    assert report["calibration"]["attempts"] == 20
    assert report["steps"][0]["check"] == "good"
    assert 0.8 < report["overall_confidence"] <= 0.95
    assert "git bisect start" in (out / "bisect.log").read_text()
    state = json.loads((out / bisect_cmd.STATE_FILE).read_text())
    assert state["oracle_options"] == {"seed": str(seed)}
    printed = capsys.readouterr().out
    assert f"first bad commit: {shas[4]} commit 5 (overall confidence" in printed
    assert_reset(repo)


def test_bisect_command_fix_mode(tmp_path: Path) -> None:
    repo = tmp_path / "tree"
    shas = make_repo(repo, ["1.0"] * 3 + [None] * 5)
    out = tmp_path / "out"
    assert cli(_args(repo, out, shas[-1], shas[0], "--fix", "--calibrate", "3")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["culprit"] == shas[3]
    assert report["fix"] is True
    assert_reset(repo)


def test_bisect_command_rejects_bad_anchors(tmp_path: Path) -> None:
    repo = tmp_path / "tree"
    shas = make_repo(repo, ["1.0", "1.0", None, None])
    with pytest.raises(UserError, match="did not reproduce"):
        cli(_args(repo, tmp_path / "o1", shas[0], shas[-1], "--calibrate", "3"))
    with pytest.raises(UserError, match="does not test good"):
        cli(_args(repo, tmp_path / "o2", shas[1], shas[0], "--calibrate", "3", "--fix"))
    assert_reset(repo)
    with pytest.raises(UserError, match="unknown oracle"):
        cli([*_args(repo, tmp_path / "o3", shas[0], shas[1]), "--oracle", "nonsense"])
    with pytest.raises(UserError, match="not available"):
        cli([*_args(repo, tmp_path / "o3", shas[0], shas[1]), "--oracle", "no_such_mod:f"])


def test_step_entry_never_exits_with_a_verdict_code(tmp_path: Path) -> None:
    # A broken state file must abort the bisection (129), not read as "bad" (1) or "good" (0).
    done = run([sys.executable, "-m", "reprolab.commands.bisect", "--state",
                str(tmp_path / "missing.json")], check=False)
    assert done.rc == EXIT_USAGE
    assert "cannot read bisect state" in done.stderr
    (tmp_path / "state.json").write_text("{}")
    assert bisect_cmd.step_entry(["--state", str(tmp_path / "state.json")]) == EXIT_USAGE
    assert bisect_cmd.step_entry([]) == EXIT_USAGE


def test_attempt_results_map_to_step_outcomes(tmp_path: Path) -> None:
    def result(outcome: Verdict, **kw: object) -> AttemptResult:
        return AttemptResult(case="c", index=0, outcome=outcome, directory=tmp_path,
                             accel="tcg", **kw)  # type: ignore[arg-type]

    hit = attempt_outcome(result(Verdict.REPRODUCED, signature="soft-lockup:fn"))
    assert (hit.kind, hit.signature, hit.artifacts) == (Outcome.REPRODUCED, "soft-lockup:fn",
                                                        tmp_path)
    # One outcome type: the attempt's and the bisection step's are the same enum.
    assert Outcome is Verdict
    assert attempt_outcome(result(Verdict.NOT_REPRODUCED)).kind is Outcome.NOT_REPRODUCED
    other = attempt_outcome(result(Verdict.OTHER_CRASH, title="BUG: oops"))
    assert (other.kind, other.signature) == (Outcome.OTHER_CRASH, "BUG: oops")
    infra = attempt_outcome(result(Verdict.INFRA_ERROR,
                                          failure=Failure.of(InfraError("qemu died"))))
    assert (infra.kind, infra.detail) == (Outcome.INFRA_ERROR, "qemu died")


def test_oracle_options_and_registry() -> None:
    assert parse_options(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_options(["novalue"])
    assert callable(resolve_factory(ORACLE))


def test_step_shim_aborts_when_reprolab_cannot_be_imported(tmp_path: Path) -> None:
    # -I -S: no site-packages, so reprolab is not importable; git must see an abort, not "bad".
    done = run([sys.executable, "-I", "-S", "-c", bisect_cmd.STEP_SHIM, "--state", "x"],
               cwd=tmp_path, check=False)
    assert done.rc == EXIT_USAGE
    assert "cannot import reprolab" in done.stderr


def test_bad_ranges_are_rejected_before_calibrating(tmp_path: Path) -> None:
    """Swapped, equal and unrelated commits, and a tree that is not git: rejected before the
    oracle is even loaded (``--oracle nonsense`` would fail right after) or --out made."""
    repo = tmp_path / "tree"
    shas = make_repo(repo, [None, None, "1.0", "1.0"])
    other = tmp_path / "other"
    make_repo(other, ["0.3"])  # another tree, so another hash
    run(["git", "-C", str(repo), "fetch", "-q", str(other), "main:unrelated"])
    unrelated = run(["git", "-C", str(repo), "rev-parse", "unrelated"]).stdout.strip()
    plain = tmp_path / "plain"
    plain.mkdir()
    out = tmp_path / "never"
    cases = [
        (repo, shas[-1], shas[0], [], "look swapped: swap --good and --bad"),
        (repo, shas[0], shas[-1], ["--fix"], "with --fix the good commit is the newer one"),
        (repo, shas[1], shas[1], [], "the same commit"),
        (repo, shas[0], unrelated, [], "share no history"),
        (plain, "v1", "v2", [], "is not a git repository"),
        (tmp_path / "missing", "v1", "v2", [], "is not a directory"),
    ]
    for tree, good, bad, extra, message in cases:
        with pytest.raises(UserError, match=message):
            cli([*_args(tree, out, good, bad, *extra), "--oracle", "nonsense"])
        assert not out.exists()
    assert_reset(repo)


def test_step_state_errors_name_the_key_and_bugs_are_not_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"repo": str(tmp_path), "testcase": "t.py"}))
    assert bisect_cmd.step_entry(["--state", str(state)]) == EXIT_USAGE
    assert "key 'oracle' is missing" in capsys.readouterr().err
    state.write_text(json.dumps({"repo": 7}))
    assert bisect_cmd.step_entry(["--state", str(state)]) == EXIT_USAGE
    assert "key 'repo' has the wrong type" in capsys.readouterr().err
