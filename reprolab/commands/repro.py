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
import sys
import time
from pathlib import Path
from typing import Any

from reprolab.attempt import AttemptResult
from reprolab.errors import UserError
from reprolab.paths import default_artifacts
from reprolab.replay import (
    BUNDLE_DIR,
    LoadedCase,
    check_replayed_cmdline,
    kernel_to_data,
    load_testcase,
    override_kernel,
    replay_plan,
)
from reprolab.results import CaseResult, append_result
from reprolab.session import Session
from reprolab.virt.connection import DEFAULT_URI

EXIT_REPRODUCED = 0
EXIT_NOT_REPRODUCED = 1
EXIT_INFRA = 3


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
                   help="stop at the first hit or run all attempts (default: the case's)")
    p.add_argument("--kernel", default=None, help="kernel spec replacing the case's")
    p.add_argument("--patch", type=Path, default=None,
                   help="patch (or series dir) applied on top of the case's kernel source")
    p.add_argument("--config", default=None,
                   help="base config: tinyconfig|defconfig|allnoconfig or a .config file")
    p.add_argument("--fragment", type=Path, action="append", default=[],
                   help="extra config fragment (repeatable)")
    p.add_argument("--snapshot", action="store_true",
                   help="boot once, then restore the post-boot state for each attempt")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="artifact directory (default ./artifacts/repro-<time>)")
    p.add_argument("--uri", default=DEFAULT_URI, help="libvirt URI")
    p.set_defaults(func=main)


def _plan(args: argparse.Namespace) -> tuple[LoadedCase, Any]:
    if args.bundle is not None:
        if args.testcase:
            raise UserError("give either a test case or --bundle, not both")
        plan = replay_plan(args.bundle)
        return plan.loaded, plan
    if not args.testcase:
        raise UserError("name a test case (FILE[::test_name]) or --bundle DIR")
    return load_testcase(args.testcase), None


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if args.attempts is not None and args.attempts < 1:
        raise UserError("--attempts must be at least 1")
    loaded, plan = _plan(args)
    spec = plan.kernel if plan is not None else loaded.kernel_spec()
    spec = override_kernel(spec, kernel=args.kernel, patch=args.patch, config=args.config,
                           fragments=args.fragment)
    case = loaded.case.with_overrides(kernel=kernel_to_data(spec), attempts=args.attempts,
                                      until=args.until)
    if plan is not None and args.attempts is None:
        case = dataclasses.replace(case, attempts=1)
    body = loaded.body()
    artifacts = (args.artifacts or default_artifacts()
                 / f"repro-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out = Console(file=sys.stdout)
    out.print(f"[bold]{case.name}[/]: kernel {spec}, {case.attempts} attempt(s), "
              f"until {case.until}; artifacts {artifacts}")
    session: Session
    if args.snapshot:
        from reprolab.snapshot import SnapshotSession

        session = SnapshotSession(uri=args.uri, artifacts=artifacts)
    else:
        session = Session(uri=args.uri, artifacts=artifacts)
    results: list[AttemptResult] = []
    try:
        with out.status("preparing the kernel and image"):
            kernel = session.kernel(case.kernel, artifacts)
            session.check_expectation(case, artifacts)
            session.image(case.guest.image, kernel)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=out, transient=False) as progress:
            task = progress.add_task("attempts (0 hits)", total=case.attempts)
            for index in range(1, case.attempts + 1):
                result, body_error = session.run_attempt(case, index, body)
                results.append(result)
                hits = sum(r.hit for r in results)
                progress.update(task, advance=1, description=f"attempts ({hits} hits)")
                progress.console.print(_line(result, body_error))
                if result.hit and case.until == "first-hit":
                    progress.update(task, total=index)
                    break
    finally:
        session.close()
    outcome = CaseResult(case, tuple(results))
    append_result(artifacts, outcome)
    if plan is not None:
        for r in results:
            warning = check_replayed_cmdline(plan, r.directory)
            if warning:
                out.print(f"[yellow]warning[/]: {warning}")
    return _summary(out, outcome, artifacts)


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
    out.print(f"[{style}]{outcome.verdict}[/]: rate {rate}")
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
