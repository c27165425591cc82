"""``reprolab list``: the test cases, what each runs, and what it needs on this host.

Cases are found by pytest's own collection (parametrized cases and ``skipif`` marks count
exactly as in a run), nothing runs and no guest boots. For each case: its kernel, mode,
attempt rule, expectation, guest, and what this host lacks for it (a built kernel not in the
cache, nested virtualisation, debug info for the dossier), with the reason it would skip.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reprolab.case import CaseSpec
from reprolab.errors import UserError


@dataclass(frozen=True)
class CaseInfo:
    case: str
    kernel: str
    mode: str
    attempts: int
    until: str
    expect: str
    guest: str
    #: What the case needs from this host, each "ok: ..." or "missing: ...".
    needs: tuple[str, ...]
    #: Why pytest would skip it here (its skipif reason), else None.
    skip: str | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "needs": list(self.needs)}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "list", help="list test cases: kernel, mode, attempts, expect, what each needs here",
        description="Collect the test cases (as pytest would, nothing runs) and say for "
                    "each its kernel, mode, attempt rule, expectation, and what it needs on "
                    "this host or why it would skip.")
    p.add_argument("paths", nargs="*", default=["testcases"], help="test files or directories")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--attempts", type=int, default=None,
                   help="show the cases as `reprolab run --attempts N` would run them")
    p.add_argument("--until", choices=["first-hit", "all"], default=None)
    p.add_argument("--mode", choices=["regression", "reproduce"], default=None)
    p.set_defaults(func=main)


def _kernel_text(kernel: Any) -> str:
    return kernel if isinstance(kernel, str) else json.dumps(kernel, sort_keys=True)


def kernel_needs(kernel: Any) -> list[str]:
    """Whether the case's kernel is here, and whether the dossier will have debug info."""
    spec = _kernel_text(kernel)
    if spec == "stock":
        from reprolab.kernel.artifacts import stock_release

        try:
            release = stock_release()
        except UserError as exc:
            return [f"missing: stock kernel ({exc})"]
        from reprolab.kernel.debuginfo import stock_debug_info

        dbg = stock_debug_info(release)
        return [f"ok: stock kernel {release}",
                f"ok: debug info {dbg.path}" if dbg.present else
                f"missing: debug info for dossiers ({dbg.advice})"]
    if isinstance(kernel, str) and kernel.startswith("build:"):
        from reprolab.scenario.needs import built_kernel_missing

        why = built_kernel_missing(kernel)
        return [f"missing: {why}" if why else f"ok: kernel {spec} (cached or builds on demand)"]
    return [f"ok: kernel {spec}"]


def guest_needs(case: CaseSpec) -> list[str]:
    g = case.guest
    out = [f"ok: image {g.image}"]
    if g.nested:
        from reprolab.scenario.needs import nested_missing

        flag = "vmx" if (g.cpu_model or "").lower().find("vmx") >= 0 else "svm"
        why = nested_missing(flag)
        out.append(f"missing: {why}" if why else f"ok: nested {flag.upper()}")
    return out


def _guest_text(case: CaseSpec) -> str:
    g = case.guest
    parts = [f"{g.vcpus} vCPU", f"{g.memory_mib} MiB", g.image]
    if g.nested:
        parts.append("nested")
    if g.watchdog:
        parts.append(f"watchdog {g.watchdog}")
    return ", ".join(parts)


class _Collector:
    """A pytest plugin that keeps the collected reprolab items and their skip reasons."""

    def __init__(self) -> None:
        self.items: list[tuple[CaseSpec, str | None]] = []
        self.errors: list[str] = []

    def pytest_collection_finish(self, session: Any) -> None:
        from reprolab.pytest_plugin import case_of

        for item in session.items:
            try:
                case = case_of(item)
            except UserError as exc:
                self.errors.append(str(exc))
                continue
            if case is not None:
                self.items.append((case, _skip_reason(item)))

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.errors.append(f"{report.nodeid}: {report.longreprtext.strip().splitlines()[-1]}"
                               if report.longreprtext else report.nodeid)


def _skip_reason(item: Any) -> str | None:
    for mark in item.iter_markers("skip"):
        return str(mark.kwargs.get("reason") or (mark.args[0] if mark.args else "skip"))
    for mark in item.iter_markers("skipif"):
        if mark.args and all(isinstance(a, bool) for a in mark.args) and any(mark.args):
            return str(mark.kwargs.get("reason", "skipif"))
    return None


def collect(paths: list[str], options: Sequence[str] = ()) -> list[CaseInfo]:
    """The cases under ``paths`` as a run with the plugin ``options`` would see them."""
    import pytest

    for p in paths:
        if not Path(p.partition("::")[0]).exists():
            raise UserError(f"no test file or directory {p}")
    collector = _Collector()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = pytest.main([*paths, "--collect-only", "-q", "-p", "no:cacheprovider",
                            *options], plugins=[collector])
    if collector.errors:
        raise UserError("cannot collect the test cases: " + "; ".join(collector.errors))
    if int(code) not in (0, 5):  # 5: nothing collected, an empty list is an answer
        tail = sink.getvalue().strip().splitlines()[-1:] or ["?"]
        raise UserError(f"cannot collect the test cases: {tail[0]}")
    return [
        CaseInfo(case=case.name, kernel=_kernel_text(case.kernel), mode=case.mode,
                 attempts=case.attempts, until=case.until, expect=case.expect.describe() or
                 "(none: exploration)", guest=_guest_text(case),
                 needs=tuple(kernel_needs(case.kernel) + guest_needs(case)), skip=skip)
        for case, skip in collector.items
    ]


def main(args: argparse.Namespace) -> int:
    options = [f"--reprolab-{name}={value}" for name, value in
               (("attempts", args.attempts), ("until", args.until), ("mode", args.mode))
               if value is not None]
    infos = collect(list(args.paths), options)
    if args.format == "json":
        sys.stdout.write(json.dumps([i.to_json() for i in infos], indent=2) + "\n")
        return 0
    for i in infos:
        print(i.case)
        print(f"  kernel {i.kernel}; mode {i.mode}; {i.attempts} attempt(s), until {i.until}")
        print(f"  expect {i.expect}")
        print(f"  guest {i.guest}")
        for need in i.needs:
            print(f"  {need}")
        print(f"  would skip: {i.skip}" if i.skip else "  runs here")
    if not infos:
        print("no reprolab test cases found")
    return 0
