"""``reprolab bisect``: find the commit that introduced (or, with --fix, fixed) a flaky bug.

The parent process measures the bad commit's repro rate, plans the per-step error budget
from it, checks the good commit, then hands the tree to ``git bisect run`` with the hidden
``reprolab bisect-step`` as the step command. Each step is a fresh process that rebuilds its
oracle from a state file, so a step that crashes or is killed cannot corrupt the parent's
view, and ``git bisect log`` stays replayable by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from reprolab.bisect.driver import (
    EXIT_INFRA,
    EXIT_USAGE,
    StepStatus,
    bisect,
    calibrate,
    check_range,
    checked_out,
    run_step,
    step_main,
)
from reprolab.bisect.oracles import (
    DEFAULT_ORACLE,
    OracleContext,
    close_oracle,
    load_oracle,
    parse_options,
)
from reprolab.bisect.report import build_report
from reprolab.bisect.sequential import (
    DEFAULT_OVERALL_CONFIDENCE,
    DEFAULT_RATE_CONFIDENCE,
    StepPolicy,
    Verdict,
    policy_for_bisection,
)
from reprolab.errors import ExitContext, InfraError, UserError, exit_code
from reprolab.paths import default_artifacts
from reprolab.proc import run

STATE_FILE = "bisect-state.json"

#: What ``git bisect run`` executes per commit. Not the whole CLI: an unrelated subcommand
#: failing to import must not abort a bisection. And not a bare ``-m``: if reprolab itself
#: cannot be imported (a broken venv mid-bisection), Python exits 1, which git would take
#: for "bad" and blame the commit; the shim turns that into an abort (129) instead.
STEP_SHIM = (
    "import sys\n"
    "try:\n"
    "    from reprolab.commands.bisect import step_entry\n"
    "except BaseException as exc:\n"
    "    print(f'reprolab bisect-step: cannot import reprolab: {exc}', file=sys.stderr)\n"
    "    sys.exit(129)\n"
    "sys.exit(step_entry(sys.argv[1:]))\n"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bisect",
        help="bisect a kernel tree for the commit that introduced (or fixed) a test case's bug",
        description=(
            "Measure the bad commit's repro rate, then drive `git bisect run` with a "
            "sequential test per commit: a step stops at the first target hit, or after "
            "enough straight misses to call the commit good at the planned error rate."
        ),
    )
    p.add_argument("testcase", help="test case (pytest node id or testcases/ file)")
    p.add_argument("--tree", type=Path, default=Path("."), help="kernel git tree (default .)")
    p.add_argument("--good", required=True, help="a commit where the bug does not reproduce")
    p.add_argument("--bad", required=True, help="a commit where the bug reproduces")
    p.add_argument("--fix", action="store_true",
                   help="find the commit that fixed the bug (--good is then the newer one)")
    p.add_argument("--calibrate", type=int, default=10, metavar="N",
                   help="attempts on the bad commit to measure its rate (default 10)")
    p.add_argument("--confidence", type=float, default=DEFAULT_OVERALL_CONFIDENCE,
                   help="overall confidence target (default %(default)s)")
    p.add_argument("--rate-confidence", type=float, default=DEFAULT_RATE_CONFIDENCE,
                   help="one-sided confidence of the bad rate's lower bound "
                        "(default %(default)s)")
    p.add_argument("--false-hit-rate", type=float, default=0.0, metavar="EPS",
                   help="chance a good commit still shows the target signature (default 0)")
    p.add_argument("--max-attempts", type=int, default=None, metavar="N",
                   help="attempt cap per step (default: twice the misses that prove good, "
                        "at least 100)")
    p.add_argument("--on-cap", choices=("lean", "skip"), default="lean",
                   help="at the cap, follow the evidence (lean) or skip the commit")
    p.add_argument("--no-verify-good", dest="verify_good", action="store_false",
                   help="do not run a step on the good commit first")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for the report, step log and artifacts")
    p.add_argument("--oracle", default=DEFAULT_ORACLE, help=argparse.SUPPRESS)
    p.add_argument("--oracle-opt", action="append", metavar="KEY=VALUE", help=argparse.SUPPRESS)
    p.set_defaults(func=_bisect)

    # Hidden: the step command git bisect run calls. Not listed in `reprolab --help`.
    s = subparsers.add_parser("bisect-step")
    s.add_argument("--state", type=Path, required=True)
    s.set_defaults(func=_bisect_step)


def _say(message: str) -> None:
    print(f"reprolab bisect: {message}", flush=True)


def _bisect(args: argparse.Namespace) -> int:
    repo = args.tree.resolve()
    if args.calibrate < 1:
        raise UserError("--calibrate must be at least 1")
    good, bad = check_range(repo, args.good, args.bad, fix=args.fix)
    old, new = (bad, good) if args.fix else (good, bad)
    candidates = int(run(["git", "-C", str(repo), "rev-list", "--count", f"{old}..{new}"],
                         error=UserError).stdout.strip() or 0)
    out = (args.out or default_artifacts() / f"bisect-{time.strftime('%Y%m%d-%H%M%S')}")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    context = OracleContext(
        repo=repo, testcase=args.testcase, artifacts=out / "attempts",
        options=parse_options(args.oracle_opt),
    )
    step_log = out / "steps.jsonl"
    step_log.unlink(missing_ok=True)

    oracle = load_oracle(args.oracle, context)
    checks: list[dict[str, Any]] = []
    try:
        _say(f"measuring the bad commit {bad[:12]} ({args.calibrate} attempts)")
        with checked_out(repo, bad):
            rate, others = calibrate(oracle, bad, args.calibrate)
        _say(f"bad commit rate: {rate}"
             + (f"; other crashes: {others}" if others else ""))
        policy = policy_for_bisection(
            rate, candidates=candidates, overall_confidence=args.confidence,
            rate_confidence=args.rate_confidence, false_hit_rate=args.false_hit_rate,
            max_attempts=args.max_attempts, on_cap=args.on_cap,
        )
        _say(f"{candidates} commits; planning on bad rate >= {policy.bad_rate:.1%}, "
             f"{policy.beta:.2%} error per step, {policy.misses_to_good()} straight misses "
             f"to call a commit good")
        if args.verify_good:
            with checked_out(repo, good):
                result = run_step(oracle, good, policy)
            checks.append({**result.as_dict(), "check": "good"})
            if result.status is StepStatus.INFRA_ERROR:
                raise InfraError(f"checking the good commit {good[:12]}: {result.detail}")
            tested_good = (
                result.status is StepStatus.DECIDED
                and result.decision.verdict is Verdict.GOOD
            )
            if not tested_good:
                raise UserError(
                    f"the good commit {good[:12]} does not test good "
                    f"({result.status.value}, {result.decision.verdict.value}, "
                    f"{result.decision.hits}/{result.decision.attempts} hits); pick another"
                )
    finally:
        close_oracle(oracle)

    state = out / STATE_FILE
    state.write_text(json.dumps({
        "repo": str(repo), "testcase": args.testcase, "oracle": args.oracle,
        "oracle_options": dict(context.options), "artifacts": str(context.artifacts),
        "policy": policy.as_dict(), "fix": args.fix, "step_log": str(step_log),
    }, indent=2) + "\n")
    step_command = [sys.executable, "-c", STEP_SHIM, "--state", str(state)]
    result_ = bisect(repo, good, bad, step_command, fix=args.fix, step_log=step_log)
    report = build_report(
        result_, calibration=rate, policy=policy, rate_confidence=args.rate_confidence,
        checks=checks,
    )
    path = report.write(out)
    print(report.render())
    _say(f"report: {path}")
    return 0 if report.culprit else 1


#: Keys of the state file and the JSON types each must have.
_STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "repo": str, "testcase": str, "oracle": str, "artifacts": str, "policy": dict,
    "oracle_options": (dict, type(None)), "fix": bool, "step_log": (str, type(None)),
}


def _load_state(path: Path) -> dict[str, Any]:
    """The state file, checked key by key: a bad one is a usage error naming the key, and
    a KeyError or TypeError further down is then a bug, not something to blame on input."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read bisect state {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"bisect state {path} is not a JSON object")
    for key, kind in _STATE_KEYS.items():
        if key not in data and isinstance(None, kind if isinstance(kind, tuple) else (kind,)):
            continue
        if key not in data:
            raise UserError(f"bisect state {path}: key {key!r} is missing")
        if not isinstance(data[key], kind):
            raise UserError(f"bisect state {path}: key {key!r} has the wrong type "
                            f"({type(data[key]).__name__})")
    StepPolicy.from_dict(data["policy"])  # a UserError naming what is wrong with it
    return data


def _bisect_step(args: argparse.Namespace) -> int:
    """Never lets an error reach the CLI's exit 2/3: git would read those as "bad"."""
    try:
        state = _load_state(args.state)
        repo = Path(state["repo"])
        commit = run(["git", "-C", str(repo), "rev-parse", "HEAD"]).stdout.strip()
        context = OracleContext(
            repo=repo, testcase=str(state["testcase"]), artifacts=Path(state["artifacts"]),
            options=dict(state.get("oracle_options") or {}),
        )
        policy = StepPolicy.from_dict(state["policy"])
        oracle = load_oracle(str(state["oracle"]), context)
        try:
            return step_main(
                oracle, commit, policy, fix=bool(state.get("fix")),
                step_log=Path(state["step_log"]) if state.get("step_log") else None,
            )
        finally:
            close_oracle(oracle)
    except UserError as exc:
        print(f"reprolab bisect-step: error: {exc}", file=sys.stderr)
        return exit_code(exc, ExitContext.BISECT_STEP)
    except InfraError as exc:
        print(f"reprolab bisect-step: infrastructure error: {exc}", file=sys.stderr)
        return exit_code(exc, ExitContext.BISECT_STEP)
    except KeyboardInterrupt as exc:
        return exit_code(exc, ExitContext.BISECT_STEP)
    except Exception:
        traceback.print_exc()
        return EXIT_INFRA


def step_entry(argv: list[str]) -> int:
    """Entry point of ``python -m reprolab.commands.bisect --state FILE`` (the step command)."""
    parser = argparse.ArgumentParser(prog="reprolab bisect-step")
    parser.add_argument("--state", type=Path, required=True)
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return EXIT_USAGE
    return _bisect_step(args)


if __name__ == "__main__":
    sys.exit(step_entry(sys.argv[1:]))
