"""How many lab hosts a nightly suite needs, from per-attempt times and guest sizes.

A case's attempts run one after another in the worker that owns the case (the repro loop
decides after each attempt whether to go on), so the unit of scheduling is the whole case,
not the attempt: a suite whose single case outlasts the window cannot be saved by more hosts.
Identical cases on ``S`` guest slots finish in ``ceil(N / S)`` rounds, so the slots needed
are ``ceil(N / floor(window / case_time))`` and the hosts those slots divided by the guests
one host holds. Hosts hold ``min(cores // vcpus, memory // guest_memory)`` guests: QEMU under
load wants a core per vCPU, and guest memory is not overcommitted (a swapping host turns
timing-sensitive reproductions into noise).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from reprolab.errors import UserError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_MIB_PER = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "": 1024}


def parse_memory(value: str | float, *, what: str) -> int:
    """Memory in MiB from ``"1G"``, ``"512M"``, ``"1.5GiB"`` or a bare number of GiB."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise UserError(f"{what}: expected a size such as 1G or 512M, got {value!r}")
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"{what}: {text!r} is not a size (write e.g. 1G, 512M or 24GiB)")
    mib = float(match.group(1)) * _MIB_PER[match.group(2).upper()]
    if mib < 1:
        raise UserError(f"{what}: {text!r} is less than 1 MiB")
    return int(mib)


def guests_per_host(
    *, host_cores: int, host_memory_mib: int, guest_vcpus: int, guest_memory_mib: int
) -> int:
    """Guests of one size that fit on a host without overcommitting cores or memory."""
    if guest_vcpus < 1 or guest_memory_mib < 1:
        raise UserError(
            f"a guest needs at least 1 vCPU and 1 MiB (got {guest_vcpus} vCPUs, "
            f"{guest_memory_mib} MiB)"
        )
    return max(0, min(host_cores // guest_vcpus, host_memory_mib // guest_memory_mib))


@dataclass(frozen=True)
class Suite:
    """A nightly suite and the hosts it runs on, as the planner sees them."""

    cases: int
    attempts: int
    minutes_per_attempt: float
    guest_vcpus: int
    guest_memory_mib: int
    host_cores: int
    host_memory_mib: int
    window_hours: float
    #: Fraction of the window kept free for infrastructure retries and slow attempts.
    headroom: float = 0.0
    #: Spread one case's attempts over several guests (only for repro loops that allow it).
    spread_attempts: bool = False


@dataclass(frozen=True)
class Estimate:
    """What :func:`estimate` concludes; ``hosts`` is the answer, the rest shows the working."""

    guests_per_host: int
    #: Length of one unit of scheduling: a whole case, or one attempt when spread.
    unit_minutes: float
    units: int
    units_per_slot: int
    slots: int
    hosts: int
    guest_hours: float
    #: How long the suite takes on ``hosts`` hosts.
    makespan_hours: float
    #: Share of the hosts' guest slots busy over the window.
    utilisation: float


def estimate(suite: Suite) -> Estimate:
    """Hosts needed to finish ``suite`` inside its window; :class:`UserError` when none can."""
    _check(suite)
    per_host = guests_per_host(
        host_cores=suite.host_cores,
        host_memory_mib=suite.host_memory_mib,
        guest_vcpus=suite.guest_vcpus,
        guest_memory_mib=suite.guest_memory_mib,
    )
    if per_host == 0:
        raise UserError(
            f"a guest of {suite.guest_vcpus} vCPUs and {suite.guest_memory_mib} MiB does not fit "
            f"on a host of {suite.host_cores} cores and {suite.host_memory_mib} MiB"
        )
    if suite.spread_attempts:
        unit, units = suite.minutes_per_attempt, suite.cases * suite.attempts
    else:
        unit, units = suite.minutes_per_attempt * suite.attempts, suite.cases
    usable = suite.window_hours * 60 * (1 - suite.headroom)
    per_slot = math.floor(usable / unit + 1e-9)
    if per_slot == 0:
        what = "one attempt" if suite.spread_attempts else f"one case ({suite.attempts} attempts)"
        raise UserError(
            f"{what} takes {unit:g} min, longer than the usable window of {usable:g} min: "
            "widen --window, lower --headroom or --attempts"
        )
    slots = math.ceil(units / per_slot)
    hosts = math.ceil(slots / per_host)
    rounds = math.ceil(units / (hosts * per_host))
    work = units * unit
    return Estimate(
        guests_per_host=per_host,
        unit_minutes=unit,
        units=units,
        units_per_slot=per_slot,
        slots=slots,
        hosts=hosts,
        guest_hours=work / 60,
        makespan_hours=rounds * unit / 60,
        utilisation=work / (hosts * per_host * suite.window_hours * 60),
    )


def _check(suite: Suite) -> None:
    positive = {
        "--cases": suite.cases,
        "--attempts": suite.attempts,
        "--minutes-per-attempt": suite.minutes_per_attempt,
        "--host-cores": suite.host_cores,
        "--window": suite.window_hours,
    }
    for flag, value in positive.items():
        if not value > 0:
            raise UserError(f"{flag} must be greater than 0 (got {value:g})")
    if not 0 <= suite.headroom < 1:
        raise UserError(f"--headroom must be a fraction in [0, 1) (got {suite.headroom:g})")
