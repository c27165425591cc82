"""The nightly capacity planner: its arithmetic, its refusals and its command line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reprolab.capacity import Suite, estimate, guests_per_host, parse_memory
from reprolab.cli import EXIT_USER, main
from reprolab.errors import UserError

LAB = Suite(
    cases=200,
    attempts=5,
    minutes_per_attempt=3,
    guest_vcpus=2,
    guest_memory_mib=1024,
    host_cores=32,
    host_memory_mib=128 * 1024,
    window_hours=8,
)


@pytest.mark.parametrize(
    ("text", "mib"),
    [("1G", 1024), ("1GiB", 1024), ("512M", 512), ("1.5g", 1536), ("24", 24 * 1024),
     ("2T", 2 * 1024 * 1024), (8, 8 * 1024), ("2048k", 2)],
)
def test_parse_memory(text: str | int, mib: int) -> None:
    assert parse_memory(text, what="--x") == mib


@pytest.mark.parametrize("text", ["", "lots", "1Q", "-1G", "0.0001M"])
def test_parse_memory_refuses_non_sizes(text: str) -> None:
    with pytest.raises(UserError, match="--guest-memory"):
        parse_memory(text, what="--guest-memory")


def test_guests_per_host_is_bounded_by_cores_and_memory() -> None:
    assert guests_per_host(host_cores=32, host_memory_mib=131072, guest_vcpus=2,
                           guest_memory_mib=1024) == 16
    assert guests_per_host(host_cores=32, host_memory_mib=8192, guest_vcpus=2,
                           guest_memory_mib=4096) == 2
    assert guests_per_host(host_cores=2, host_memory_mib=24576, guest_vcpus=4,
                           guest_memory_mib=1024) == 0


def test_whole_cases_are_the_unit() -> None:
    est = estimate(LAB)
    assert est.guests_per_host == 16
    assert est.unit_minutes == 15  # 5 attempts of 3 minutes, one after another
    assert est.units_per_slot == 32  # 480 min // 15 min
    assert est.slots == 7  # ceil(200 / 32)
    assert est.hosts == 1
    assert est.guest_hours == pytest.approx(50.0)
    assert est.makespan_hours == pytest.approx(13 * 15 / 60)  # ceil(200 / 16) rounds


def test_more_work_needs_more_hosts() -> None:
    est = estimate(replace(LAB, cases=1000, attempts=20))
    # 60 min per case, 8 cases per slot, 125 slots, 16 slots a host.
    assert (est.units_per_slot, est.slots, est.hosts) == (8, 125, 8)
    assert est.makespan_hours <= LAB.window_hours


def test_headroom_shrinks_the_window() -> None:
    full = estimate(replace(LAB, cases=1000, attempts=20))
    spare = estimate(replace(LAB, cases=1000, attempts=20, headroom=0.25))
    assert spare.units_per_slot == 6 and spare.hosts == 11 > full.hosts
    assert spare.makespan_hours <= LAB.window_hours * 0.75


def test_spreading_attempts_schedules_attempts() -> None:
    est = estimate(replace(LAB, cases=10, attempts=200, spread_attempts=True))
    assert est.units == 2000 and est.unit_minutes == 3
    assert est.hosts == 1  # 160 attempts a slot, 13 slots


def test_a_case_longer_than_the_window_cannot_be_planned() -> None:
    with pytest.raises(UserError, match="longer than the usable window"):
        estimate(replace(LAB, attempts=200))


def test_a_guest_bigger_than_the_host_cannot_be_planned() -> None:
    with pytest.raises(UserError, match="does not fit"):
        estimate(replace(LAB, guest_vcpus=64))


@pytest.mark.parametrize(
    ("change", "flag"),
    [({"cases": 0}, "--cases"), ({"minutes_per_attempt": -1}, "--minutes-per-attempt"),
     ({"window_hours": 0}, "--window"), ({"headroom": 1.0}, "--headroom")],
)
def test_nonsense_is_refused(change: dict[str, float], flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        estimate(replace(LAB, **change))  # type: ignore[arg-type]


ARGS = ["capacity", "--minutes-per-attempt", "3", "--host-cores", "32", "--host-memory", "128G"]


def test_cli_explains_one_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--cases", "200", "--attempts", "5"]) == 0
    out = capsys.readouterr().out
    assert "hosts needed        1" in out
    assert "50.0 guest-hours" in out


def test_cli_prints_a_table_for_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--cases", "200,1000", "--attempts", "5,20,200"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| cases |")
    assert "| 1000 | 20 | 3 | 1000.0 | 8 | 8.0 |" in rows
    assert "| 200 | 200 | 3 | — | never | one case outlasts the window |" in rows


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main([*ARGS, "--cases", "1000", "--attempts", "20", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["hosts"] == 8 and entry["cases"] == 1000


def test_cli_bad_input_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--cases", "many", "--attempts", "5"]) == EXIT_USER
    assert "--cases" in capsys.readouterr().err
    assert main([*ARGS, "--cases", "5", "--attempts", "5", "--guest-vcpus", "64"]) == EXIT_USER
    assert "does not fit" in capsys.readouterr().err
