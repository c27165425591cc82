"""``reprolab capacity``: how many lab hosts a nightly suite needs.

One value per option prints the working for one suite; comma-separated values for
``--cases``, ``--attempts`` or ``--minutes-per-attempt`` print a Markdown table over every
combination, which is how docs/capacity.md is made.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, replace

from reprolab.capacity import Estimate, Suite, estimate, parse_memory
from reprolab.errors import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="how many lab hosts a nightly suite needs",
        description="Hosts needed to run N cases of M attempts inside a nightly window.",
    )
    parser.add_argument("--cases", required=True, help="cases in the suite (or a list: 50,100)")
    parser.add_argument("--attempts", required=True, help="attempts per case (or a list)")
    parser.add_argument(
        "--minutes-per-attempt", required=True,
        help="measured wall time of one attempt, boot to verdict (or a list)",
    )
    parser.add_argument("--guest-vcpus", type=int, default=2, help="vCPUs per guest (2)")
    parser.add_argument("--guest-memory", default="1G", help="memory per guest, e.g. 1G (1G)")
    parser.add_argument("--host-cores", type=int, required=True, help="cores per lab host")
    parser.add_argument("--host-memory", required=True, help="memory per lab host, e.g. 128G")
    parser.add_argument("--window", type=float, default=8.0, help="nightly window in hours (8)")
    parser.add_argument(
        "--headroom", type=float, default=0.0,
        help="fraction of the window kept free for retries, e.g. 0.2 (0)",
    )
    parser.add_argument(
        "--spread-attempts", action="store_true",
        help="schedule attempts, not cases (when a case's attempts may run on several guests)",
    )
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.set_defaults(func=_run)


def _numbers(text: str, flag: str, kind: type[int] | type[float]) -> list[float]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag}: {text!r} is not a number or a comma-separated list") from None
    if not values:
        raise UserError(f"{flag}: no value given")
    return [float(v) for v in values]


def _run(args: argparse.Namespace) -> int:
    base = Suite(
        cases=1,
        attempts=1,
        minutes_per_attempt=1.0,
        guest_vcpus=args.guest_vcpus,
        guest_memory_mib=parse_memory(args.guest_memory, what="--guest-memory"),
        host_cores=args.host_cores,
        host_memory_mib=parse_memory(args.host_memory, what="--host-memory"),
        window_hours=args.window,
        headroom=args.headroom,
        spread_attempts=args.spread_attempts,
    )
    estimate(base)  # a guest that fits no host is the user's to fix, whatever the grid
    grid = list(
        itertools.product(
            _numbers(args.cases, "--cases", int),
            _numbers(args.attempts, "--attempts", int),
            _numbers(args.minutes_per_attempt, "--minutes-per-attempt", float),
        )
    )
    suites = [
        replace(base, cases=int(n), attempts=int(m), minutes_per_attempt=t) for n, m, t in grid
    ]
    if args.json:
        print(json.dumps([{**asdict(s), **asdict(estimate(s))} for s in suites], indent=2))
    elif len(suites) == 1:
        print(_explain(suites[0], estimate(suites[0])))
    else:
        print(_table(base, suites))
    return 0


def _explain(suite: Suite, est: Estimate) -> str:
    unit = "attempt" if suite.spread_attempts else "case"
    window = f"{suite.window_hours:g} h" + (
        f" less {suite.headroom:.0%} headroom" if suite.headroom else ""
    )
    rows = [
        ("guests per host", f"{est.guests_per_host}  (min({suite.host_cores} cores // "
         f"{suite.guest_vcpus} vCPUs, {suite.host_memory_mib} MiB // "
         f"{suite.guest_memory_mib} MiB))"),
        ("work", f"{suite.cases} cases x {suite.attempts} attempts x "
         f"{suite.minutes_per_attempt:g} min = {est.guest_hours:.1f} guest-hours"),
        (f"one {unit}", f"{est.unit_minutes:g} min"),
        (f"{unit}s per slot", f"{est.units_per_slot} in {window}"),
        ("guest slots needed", str(est.slots)),
        ("hosts needed", str(est.hosts)),
        ("suite takes", f"{est.makespan_hours:.1f} h on {est.hosts} host(s), "
         f"{est.utilisation:.0%} of their slots busy over the window"),
    ]
    return "\n".join(f"{label:<20}{value}" for label, value in rows)


def _table(base: Suite, suites: list[Suite]) -> str:
    head = (
        f"Hosts of {base.host_cores} cores and {base.host_memory_mib // 1024} GiB, guests of "
        f"{base.guest_vcpus} vCPUs and {base.guest_memory_mib} MiB, {base.window_hours:g} h window"
        + (f", {base.headroom:.0%} headroom" if base.headroom else "")
        + ":\n\n"
        "| cases | attempts | min/attempt | guest-hours | hosts | suite takes (h) |\n"
        "|------:|---------:|------------:|------------:|------:|----------------:|"
    )
    rows = [head]
    for suite in suites:
        try:
            est = estimate(suite)
            cells = f"{est.guest_hours:.1f} | {est.hosts} | {est.makespan_hours:.1f}"
        except UserError:
            cells = "— | never | one case outlasts the window"
        rows.append(
            f"| {suite.cases} | {suite.attempts} | {suite.minutes_per_attempt:g} | {cells} |"
        )
    return "\n".join(rows)
