"""``git bisect`` driving against real git repositories made in tmp_path.

The "kernel tree" is a small repository whose commits carry a ``bug.rate`` file (the repro
rate a commit has); the step command is a Python script running the real step logic with a
seeded flaky oracle that reads it. Everything git does here is real.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from flaky_oracle import FLAG
from git_tree import assert_reset, git_env, make_repo

from reprolab.bisect.driver import (
    EXIT_INFRA,
    EXIT_NEW,
    EXIT_OLD,
    EXIT_UNTESTABLE,
    AttemptOutcome,
    StepResult,
    StepStatus,
    bisect,
    bisect_in_progress,
    calibrate,
    checked_out,
    exit_code,
    parse_bisect_output,
    run_step,
    step_main,
)
from reprolab.bisect.report import build_report
from reprolab.bisect.sequential import StepDecision, StepPolicy, Verdict
from reprolab.errors import InfraError, UserError
from reprolab.proc import run

STEP = """
import sys
from pathlib import Path
from flaky_oracle import TreeFlagOracle
from reprolab.bisect.driver import step_main
from reprolab.bisect.sequential import StepPolicy
from reprolab.proc import run

seed, rate, mode, log = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
if mode == "interrupt":
    import os, signal, time
    os.kill(int(sys.argv[5]), signal.SIGINT)
    time.sleep(1)
policy = StepPolicy(bad_rate=rate, alpha=0.01, beta=0.01)
oracle = TreeFlagOracle(Path.cwd(), seed=seed)
sys.exit(step_main(oracle, commit, policy, fix=mode == "fix", step_log=log))
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    git_env(monkeypatch)


@pytest.fixture
def step_script(tmp_path: Path) -> Path:
    path = tmp_path / "step.py"
    path.write_text(STEP)
    return path


def _step(script: Path, log: Path, *, seed: int = 0, rate: float = 0.5,
          mode: str = "bad", extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, str(script), str(seed), str(rate), mode, str(log), *extra]


def test_bisect_names_the_commit_that_sets_the_flag(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", [None, None, None, None, "1.0", "1.0", "1.0", "1.0"])
    log = tmp_path / "steps.jsonl"
    result = bisect(tmp_path / "tree", shas[0], shas[-1], _step(step_script, log, rate=1.0),
                    step_log=log)
    assert result.culprit == shas[4]
    assert result.subject == "commit 5"
    assert result.found and result.candidates == (shas[4],)
    assert f"first bad commit: [{shas[4]}]" in result.log
    assert result.steps and all(s["status"] == "decided" for s in result.steps)
    assert_reset(tmp_path / "tree")


@pytest.mark.parametrize("seed", range(5))
def test_flaky_bisect_with_seeded_oracle(tmp_path: Path, step_script: Path, seed: int) -> None:
    """The bug reproduces at 40%; the steps plan on 30% with 1% error each."""
    flags: list[str | None] = [None] * 3 + ["0.4"] * 5
    shas = make_repo(tmp_path / "tree", flags)
    log = tmp_path / "steps.jsonl"
    result = bisect(tmp_path / "tree", shas[0], shas[-1],
                    _step(step_script, log, seed=seed, rate=0.3), step_log=log)
    assert result.culprit == shas[3]
    for step in result.steps:
        expected = "bad" if step["commit"] in shas[3:] else "good"
        assert step["verdict"] == expected
        assert step["exit"] == (EXIT_NEW if expected == "bad" else EXIT_OLD)
        assert step["confidence"] >= 0.99
    report = build_report(result, rate_confidence=0.95)
    assert report.overall_confidence is not None
    assert 0.9 <= report.overall_confidence <= 0.95
    assert shas[3] in report.render()
    # Each step line gives its attempts and its wall time.
    for step in result.steps:
        line = next(ln for ln in report.render().splitlines() if step["commit"][:12] in ln)
        assert f"/{step['attempts']}" in line and f"{step['duration']:.0f} s" in line
    assert_reset(tmp_path / "tree")


def test_fix_mode_finds_the_fixing_commit(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", ["1.0"] * 5 + [None] * 3)
    log = tmp_path / "steps.jsonl"
    # good = where the bug is gone (the newer end), bad = where it reproduces.
    result = bisect(tmp_path / "tree", shas[-1], shas[0],
                    _step(step_script, log, rate=1.0, mode="fix"), fix=True, step_log=log)
    assert result.culprit == shas[5]
    assert result.fix
    assert "first fixed commit" in result.log
    assert_reset(tmp_path / "tree")


def test_untestable_commits_are_skipped(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(
        tmp_path / "tree", [None, None, "untestable", None, None, "1.0", "1.0", "1.0"]
    )
    log = tmp_path / "steps.jsonl"
    result = bisect(tmp_path / "tree", shas[0], shas[-1], _step(step_script, log, rate=1.0),
                    step_log=log)
    assert result.culprit == shas[5]
    assert_reset(tmp_path / "tree")


def test_untestable_next_to_culprit_leaves_candidates(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", [None, None, None, "untestable", "1.0", "1.0"])
    log = tmp_path / "steps.jsonl"
    result = bisect(tmp_path / "tree", shas[0], shas[-1], _step(step_script, log, rate=1.0),
                    step_log=log)
    assert result.culprit is None
    assert set(result.candidates) == {shas[3], shas[4]}
    assert "could be any of" in build_report(result).render()
    assert_reset(tmp_path / "tree")


def test_infra_error_aborts_and_resets(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", [None] + ["infra"] * 6 + ["1.0"])
    log = tmp_path / "steps.jsonl"
    with pytest.raises(InfraError, match="step exit 128"):
        bisect(tmp_path / "tree", shas[0], shas[-1], _step(step_script, log), step_log=log)
    assert_reset(tmp_path / "tree")


def test_ctrl_c_resets_the_tree(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", [None] * 4 + ["1.0"] * 4)
    log = tmp_path / "steps.jsonl"
    command = _step(step_script, log, mode="interrupt", extra=[str(os.getpid())])
    with pytest.raises(KeyboardInterrupt):
        bisect(tmp_path / "tree", shas[0], shas[-1], command, step_log=log)
    assert_reset(tmp_path / "tree")


def test_adjacent_commits_need_no_step(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", [None, "1.0"])
    log = tmp_path / "steps.jsonl"
    result = bisect(tmp_path / "tree", shas[0], shas[1], _step(step_script, log), step_log=log)
    assert result.culprit == shas[1]
    assert result.steps == ()
    assert_reset(tmp_path / "tree")


def test_refuses_bad_input(tmp_path: Path, step_script: Path) -> None:
    repo = tmp_path / "tree"
    shas = make_repo(repo, [None, None, "1.0"])
    command = _step(step_script, tmp_path / "log")
    with pytest.raises(UserError, match="not a commit"):
        bisect(repo, "nope", shas[-1], command)
    with pytest.raises(UserError, match="not an ancestor"):
        bisect(repo, shas[-1], shas[0], command)
    with pytest.raises(UserError, match="same commit"):
        bisect(repo, shas[0], shas[0], command)
    (repo / "version").write_text("dirty\n")
    with pytest.raises(UserError, match="uncommitted changes"):
        bisect(repo, shas[0], shas[-1], command)
    run(["git", "-C", str(repo), "checkout", "-q", "--", "version"])
    run(["git", "-C", str(repo), "bisect", "start", shas[-1], shas[0]])
    with pytest.raises(UserError, match="already in progress"):
        bisect(repo, shas[0], shas[-1], command)
    assert bisect_in_progress(repo)  # someone else's bisection is left alone
    run(["git", "-C", str(repo), "bisect", "reset"])
    with pytest.raises(UserError, match="not a git repository"):
        bisect(tmp_path, shas[0], shas[-1], command)


def test_checked_out_returns_to_the_branch(tmp_path: Path) -> None:
    repo = tmp_path / "tree"
    shas = make_repo(repo, [None, "0.5"])
    with checked_out(repo, shas[0]):
        assert run(["git", "-C", str(repo), "rev-parse", "HEAD"]).stdout.strip() == shas[0]
        assert not (repo / FLAG).exists()
    assert_reset(repo)


# --- steps and exit codes without git ---------------------------------------------------


class Script:
    """Oracle replaying a fixed list of outcomes."""

    def __init__(self, outcomes: Sequence[AttemptOutcome]) -> None:
        self.outcomes: Iterator[AttemptOutcome] = iter(outcomes)

    def attempt(self, commit: str) -> AttemptOutcome:
        return next(self.outcomes)


def _result(status: StepStatus, verdict: Verdict) -> StepResult:
    decision = StepDecision(verdict=verdict, attempts=1, hits=0, llr=0.0, confidence=0.5)
    return StepResult(commit="c", status=status, decision=decision, attempts_run=1)


@pytest.mark.parametrize(
    ("status", "verdict", "regression", "fix"),
    [
        (StepStatus.DECIDED, Verdict.BAD, EXIT_NEW, EXIT_OLD),
        (StepStatus.DECIDED, Verdict.GOOD, EXIT_OLD, EXIT_NEW),
        (StepStatus.DECIDED, Verdict.UNDECIDED, EXIT_UNTESTABLE, EXIT_UNTESTABLE),
        (StepStatus.UNTESTABLE, Verdict.UNDECIDED, EXIT_UNTESTABLE, EXIT_UNTESTABLE),
        (StepStatus.INFRA_ERROR, Verdict.UNDECIDED, EXIT_INFRA, EXIT_INFRA),
    ],
)
def test_exit_code_mapping(status: StepStatus, verdict: Verdict, regression: int, fix: int) -> None:
    assert exit_code(_result(status, verdict)) == regression
    assert exit_code(_result(status, verdict), fix=True) == fix


def test_other_crashes_do_not_decide() -> None:
    policy = StepPolicy(bad_rate=0.5, beta=0.05)  # 5 straight misses prove good
    other = AttemptOutcome.other_crash("oops:unrelated_fn")
    oracle = Script([other, AttemptOutcome.miss(), other, other] + [AttemptOutcome.miss()] * 4)
    result = run_step(oracle, "c", policy)
    assert result.decision.verdict is Verdict.GOOD
    assert (result.decision.attempts, result.attempts_run) == (5, 8)
    assert result.other_crashes == {"oops:unrelated_fn": 3}

    only_others = Script([other] * 4)
    capped = run_step(only_others, "c", StepPolicy(bad_rate=0.5, max_attempts=4))
    assert capped.decision.verdict is Verdict.UNDECIDED
    assert exit_code(capped) == EXIT_UNTESTABLE


def test_untestable_and_infra_outcomes_and_exceptions() -> None:
    policy = StepPolicy(bad_rate=0.5)
    result = run_step(Script([AttemptOutcome.untestable("no build")]), "c", policy)
    assert (result.status, result.detail) == (StepStatus.UNTESTABLE, "no build")

    class Raising:
        def attempt(self, commit: str) -> AttemptOutcome:
            raise InfraError("libvirt went away")

    result = run_step(Raising(), "c", policy)
    assert result.status is StepStatus.INFRA_ERROR
    assert exit_code(result) == EXIT_INFRA


def test_calibrate_counts_only_informative_attempts() -> None:
    hit, miss = AttemptOutcome.hit("sig"), AttemptOutcome.miss()
    other = AttemptOutcome.other_crash("oops")
    rate, others = calibrate(Script([hit, miss, other, hit, miss]), "c", 5)
    assert (rate.hits, rate.attempts, others) == (2, 4, {"oops": 1})
    with pytest.raises(UserError, match="untestable"):
        calibrate(Script([AttemptOutcome.untestable("no build")]), "c", 1)


def test_parse_bisect_output() -> None:
    sha = "a" * 40
    assert parse_bisect_output(f"{sha} is the first bad commit\n", "bad") == (sha, (sha,))
    assert parse_bisect_output(f"{sha} is the first fixed commit\n", "fixed")[0] == sha
    text = (
        "There are only 'skip'ped commits left to test.\n"
        f"The first bad commit could be any of:\n{sha}\n{'b' * 40}\nWe cannot bisect more!\n"
    )
    assert parse_bisect_output(text, "bad") == (None, (sha, "b" * 40))
    assert parse_bisect_output("nothing", "bad") == (None, ())


def test_step_log_lines_are_json(tmp_path: Path, step_script: Path) -> None:
    shas = make_repo(tmp_path / "tree", [None, None, None, "1.0"])
    log = tmp_path / "steps.jsonl"
    bisect(tmp_path / "tree", shas[0], shas[-1], _step(step_script, log, rate=1.0), step_log=log)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines
    keys = {"commit", "status", "verdict", "attempts", "hits", "llr", "confidence", "exit"}
    assert all(keys <= set(line) for line in lines)
    # Infinite LLRs are written as strings, keeping the file strict JSON.
    assert any(line["llr"] in ("inf", "-inf") for line in lines)


def test_signal_module_is_usable() -> None:
    # The Ctrl-C test sends SIGINT to this process; make sure pytest did not mask it.
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


def test_oracle_bug_aborts_instead_of_blaming(capsys: pytest.CaptureFixture[str]) -> None:
    class Buggy:
        def attempt(self, commit: str) -> AttemptOutcome:
            raise ValueError("oracle bug")

    assert step_main(Buggy(), "c", StepPolicy(bad_rate=0.5)) == EXIT_INFRA
    assert "ValueError: oracle bug" in capsys.readouterr().err
