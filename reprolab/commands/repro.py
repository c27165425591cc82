"""``reprolab repro``: does this case still reproduce, and how often?

Runs one test case's attempts outside pytest (see :mod:`reprolab.replay`), with a progress
bar, and prints the repro rate with its interval and where every attempt's evidence is.
``--kernel``, ``--patch``, ``--config`` and ``--fragment`` change the case's kernel so a fix
can be tried without editing the case; ``--bundle DIR`` replays an earlier attempt's bundle.

Exit codes: 0 reproduced at least once, 1 not reproduced, 2 usage error, 3 no attempt
reached a kernel verdict (infrastructure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from reprolab.errors import EXIT_CODES, ExitContext, Family, UserError
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.paths import default_artifacts
from reprolab.replay import (
    BUNDLE_DIR,
    LoadedCase,
    ReplayPlan,
    check_rebuild_source,
    check_replayed_cmdline,
    kernel_to_data,
    load_testcase,
    override_kernel,
    replay_plan,
)
from reprolab.replay_cache import Exact, find_exact
from reprolab.run.attempt import AttemptResult
from reprolab.run.loop import run_case
from reprolab.run.record import CaseResult, append_result
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome
from reprolab.virt import DEFAULT_URI

EXIT_REPRODUCED = 0
EXIT_NOT_REPRODUCED = 1
EXIT_INFRA = EXIT_CODES[Family.INFRASTRUCTURE][ExitContext.CLI]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "repro",
        help="run one test case's attempts and print its repro rate",
        description="Run a test case N times (or replay a bundle) and print the repro rate, "
                    "its 95% interval and the artifact paths.",
    )
    p.add_argument("testcase", nargs="?", help="FILE[::test_name] (omit with --bundle)")
    p.add_argument("--bundle", type=Path, default=None,
                   help="replay the bundle in DIR (an attempt dir or its bundle/)")
    p.add_argument("--attempts", type=int, default=None, help="attempts (default: the case's)")
    p.add_argument("--until", choices=["first-hit", "all"], default=None,
                   help="first-hit: stop at the first hit; all: run every attempt (the "
                        "default when --attempts is given; otherwise the case's)")
    p.add_argument("--kernel", default=None, help="kernel spec replacing the case's")
    p.add_argument("--patch", type=Path, default=None,
                   help="patch (or series dir) applied on top of the case's kernel source")
    p.add_argument("--config", default=None,
                   help="base config: tinyconfig|defconfig|allnoconfig or a .config file")
    p.add_argument("--fragment", type=Path, action="append", default=[],
                   help="extra config fragment (repeatable)")
    p.add_argument("--trust", action="store_true",
                   help="with --bundle: import the test file even when the bundle does not "
                        "carry its hash (it is Python and runs on import)")
    p.add_argument("--portable", action="store_true",
                   help="write bundles that carry the kernel, vmlinux and initrd, to replay "
                        "on another host")
    p.add_argument("--snapshot", action="store_true",
                   help="boot once, then restore the post-boot state for each attempt")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="artifact directory (default ./artifacts/repro-<time>)")
    p.add_argument("--uri", default=DEFAULT_URI, help="libvirt URI")
    p.set_defaults(func=main)


def _plan(args: argparse.Namespace, artifacts: Path) -> tuple[LoadedCase, ReplayPlan | None]:
    if args.bundle is not None:
        if args.testcase:
            raise UserError("give either a test case or --bundle, not both")
        plan = replay_plan(args.bundle, staging=artifacts / "replay-inputs", trust=args.trust)
        return plan.loaded, plan
    if args.trust:
        raise UserError("--trust only applies to --bundle")
    if not args.testcase:
        raise UserError("name a test case (FILE[::test_name]) or --bundle DIR")
    return load_testcase(args.testcase), None


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from reprolab.commands.live import show_progress

    if args.attempts is not None and args.attempts < 1:
        raise UserError("--attempts must be at least 1")
    artifacts = (args.artifacts or default_artifacts()
                 / f"repro-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    loaded, plan = _plan(args, artifacts)
    spec = plan.kernel if plan is not None else loaded.kernel_spec()
    overridden = any((args.kernel, args.patch, args.config, args.fragment))
    spec = override_kernel(spec, kernel=args.kernel, patch=args.patch, config=args.config,
                           fragments=args.fragment)
    case = loaded.case.with_overrides(kernel=kernel_to_data(spec)).with_attempt_rule(
        args.attempts, args.until)
    if plan is not None and args.attempts is None:
        case = dataclasses.replace(case, attempts=1)
    body = loaded.body()
    out = Console(file=sys.stdout)
    out.print(f"[bold]{case.name}[/]: kernel {spec}, {case.stop_rule()}; "
              f"artifacts {artifacts}", soft_wrap=True)
    session: Session
    if args.snapshot:
        from reprolab.run.snapshot import SnapshotSession

        session = SnapshotSession(uri=args.uri, artifacts=artifacts, overlap_teardown=True)
    else:
        session = Session(uri=args.uri, artifacts=artifacts, overlap_teardown=True)
    session.portable_bundles = args.portable
    exact: Exact | None = None
    if plan is not None and not overridden:
        exact = find_exact(plan.bundle, lambda msg: out.print(f"replay {msg}", markup=False,
                                                              soft_wrap=True))
        if exact.kernel is not None:
            session.pin_kernel(case.kernel, exact.kernel)
            if exact.image is not None:
                session.pin_image(case.guest.image, exact.kernel, exact.image)
        else:
            check_rebuild_source(plan, trust=args.trust)
            out.print(f"[yellow]replay rebuilds the kernel[/]: {exact.how}; building from the "
                      "bundle's .config and patches gives another build ID than the bundle's "
                      f"({exact.recorded_build_id or 'not recorded'})", soft_wrap=True)
    results: list[AttemptResult] = []

    def show(result: AttemptResult, body_error: BaseException | None) -> None:
        results.append(result)
        hits = sum(r.hit for r in results)
        # print(), not rich: inside the live display stdout is redirected above it.
        print(f"{_line(result, body_error)}   [{result.index}/{case.attempts}, {hits} hits]",
              flush=True)

    try:
        with out.status("preparing the kernel and image"):
            kernel = session.kernel(case.kernel, artifacts)
            session.check_expectation(case, artifacts)
            session.image(case.guest.image, kernel)
        with show_progress():
            run_case(session, case, body, on_attempt=show)
    finally:
        session.close()  # waits for the vmcores and dossiers written after their verdicts
    results = [session.final(r) for r in results]
    if plan is not None:
        results = _compare_replay(out, plan, exact, kernel, results, artifacts)
    outcome = CaseResult(case, tuple(results))
    append_result(artifacts, outcome)
    return _summary(out, outcome, artifacts)


def _compare_replay(out: Any, plan: ReplayPlan, exact: Exact | None, kernel: KernelArtifacts,
                    results: list[AttemptResult], artifacts: Path) -> list[AttemptResult]:
    """Say whether the replay booted the bundle's kernel and showed its signature: in the
    output, in each attempt's result, and in ``replay.json``."""
    from reprolab.replay_cache import build_id, compare_signature

    recorded = exact.recorded_build_id if exact is not None else None
    now = build_id(kernel)
    same_kernel = recorded is not None and recorded == now
    kernel_line = (f"kernel build ID {now}, identical to the bundle's" if same_kernel
                   else f"kernel build ID {now or 'unknown'}, bundle's "
                        f"{recorded or 'not recorded'}")
    out.print(f"replay {kernel_line}", markup=False, soft_wrap=True)
    updated = []
    verdicts = []
    for r in results:
        warning = check_replayed_cmdline(plan, r.directory)
        if warning:
            out.print(f"[yellow]warning[/]: {warning}")
        match, line = compare_signature(plan.bundle.original, r.signature)
        if r.outcome is Outcome.INFRA_ERROR:
            match, line = None, "no kernel verdict (infrastructure error): nothing to compare"
        out.print(f"replay #{r.index}: {line}", markup=False, soft_wrap=True)
        verdicts.append({"attempt": r.index, "signature": r.signature, "matches": match})
        r = dataclasses.replace(r, notes=(*r.notes, f"replay: {kernel_line}", f"replay: {line}"))
        r.write()
        updated.append(r)
    (artifacts / "replay.json").write_text(json.dumps({
        "bundle": str(plan.bundle.directory),
        "kernel": {"reused": exact is not None and not exact.rebuild,
                   "how": exact.how if exact is not None else "kernel overridden",
                   "build_id": now, "recorded_build_id": recorded,
                   "identical": same_kernel, "key": kernel.key},
        "original": dict(plan.bundle.original),
        "attempts": verdicts,
        "signature_matches": bool(verdicts) and all(v["matches"] for v in verdicts),
    }, indent=2) + "\n")
    return updated


def _line(result: AttemptResult, body_error: BaseException | None) -> str:
    what = result.title or result.error or "-"
    extra = f"  (body: {type(body_error).__name__}: {body_error})" if body_error else ""
    took = f"{result.duration:.1f} s"
    return f"  #{result.index:<3} {result.outcome.value:<15} {took:>8}  {what}{extra}"


def _summary(out: Any, outcome: CaseResult, artifacts: Path) -> int:
    if not outcome.kernel_attempts:
        out.print(f"[bold red]no kernel verdict[/]: every attempt failed on the host; "
                  f"see {artifacts}")
        return EXIT_INFRA
    rate = outcome.rate()
    style = "bold green" if outcome.hits else "yellow"
    out.print(f"[{style}]{outcome.verdict}[/]: rate {rate}; {outcome.stop_note}")
    first = outcome.time_to_first_hit
    if first is not None:
        out.print(f"time to first hit: {first:.1f} s")
    for sig, count in sorted(outcome.signatures.items()):
        out.print(f"signature {sig}: {count}")
    for r in outcome.attempts:
        paths = [str(r.directory)]
        if r.vmcore:
            paths.append(str(r.vmcore))
        if (r.directory / BUNDLE_DIR).is_dir():
            paths.append(str(r.directory / BUNDLE_DIR))
        out.print(f"  attempt {r.index}: " + "  ".join(paths), soft_wrap=True)
    return EXIT_REPRODUCED if outcome.hits else EXIT_NOT_REPRODUCED
