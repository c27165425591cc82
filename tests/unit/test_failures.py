"""Failures are values with a family, and one table gives every caller its exit code."""

import json
from pathlib import Path

import pytest

from reprolab.bisect import driver
from reprolab.case import CaseSpec
from reprolab.cli import EXIT_INFRA, EXIT_USER
from reprolab.errors import (
    BootTimeout,
    ExitContext,
    Failure,
    Family,
    GuestDied,
    HostError,
    InfraError,
    LibvirtUnavailable,
    UntestableError,
    UserError,
    exit_code,
)
from reprolab.pytest_plugin import _host_trouble
from reprolab.run.attempt import AttemptResult
from reprolab.run.record import CaseResult
from reprolab.run.verdict import Outcome


@pytest.mark.parametrize(("exc", "family", "cli", "step"), [
    (UserError("bad marker"), Family.USER, 2, 129),
    (UntestableError("patch does not apply"), Family.KERNEL, 2, 125),
    (BootTimeout("no ready marker"), Family.INFRASTRUCTURE, 3, 128),
    (GuestDied("qemu exited"), Family.INFRASTRUCTURE, 3, 128),
    (HostError("disk full"), Family.HOST, 3, 128),
    (LibvirtUnavailable("libvirtd gone"), Family.HOST, 3, 128),
    (KeyboardInterrupt(), Family.INTERRUPTED, 130, 130),
    (RuntimeError("a bug"), Family.INFRASTRUCTURE, 3, 128),
])
def test_one_table_for_every_exit_code(exc: BaseException, family: Family, cli: int,
                                       step: int) -> None:
    failure = Failure.of(exc)
    assert failure.family is family and failure.type == type(exc).__name__
    assert exit_code(failure, ExitContext.CLI) == exit_code(exc, ExitContext.CLI) == cli
    assert exit_code(failure, ExitContext.BISECT_STEP) == step
    # git bisect reads 1 as "bad": no failure may exit 1 in a step.
    assert step != driver.EXIT_NEW


def test_named_exit_codes_come_from_the_table() -> None:
    assert (EXIT_USER, EXIT_INFRA) == (2, 3)
    assert (driver.EXIT_UNTESTABLE, driver.EXIT_INFRA, driver.EXIT_USAGE,
            driver.EXIT_INTERRUPTED) == (125, 128, 129, 130)


def _infra_attempt(tmp_path: Path, exc: BaseException) -> AttemptResult:
    return AttemptResult("c", 1, Outcome.INFRA_ERROR, tmp_path, "tcg",
                         failure=Failure.of(exc))


def test_failure_round_trips_through_result_json(tmp_path: Path) -> None:
    result = _infra_attempt(tmp_path, LibvirtUnavailable("libvirt at qemu:///system gone"))
    saved = json.loads(result.write().read_text())
    assert Failure.from_json(saved["failure"]) == result.failure
    # The flat keys older readers use stay.
    assert (saved["error"], saved["error_type"]) == ("libvirt at qemu:///system gone",
                                                     "LibvirtUnavailable")


def test_pool_takes_a_host_out_by_the_failure_family_not_its_words(tmp_path: Path) -> None:
    case = CaseSpec.from_marker("t.py::test_x", {"expect": {"kind": "panic"}})

    def trouble(exc: BaseException) -> str | None:
        return _host_trouble(CaseResult(case, (_infra_attempt(tmp_path, exc),)))

    assert trouble(HostError("disk full for reproductions")) == "disk full for reproductions"
    assert trouble(LibvirtUnavailable("cannot connect")) == "cannot connect"
    # Words that look like a host's are not a host's failure.
    assert trouble(InfraError("host lab1: looks like a host error")) is None
    assert trouble(BootTimeout("no ready marker")) is None


def test_a_failed_guest_command_is_the_same_failure_on_every_channel() -> None:
    from reprolab.proc import CommandResult, RemoteCommandError
    from reprolab.ssh import CommandResult as SshResult

    assert SshResult is CommandResult  # SSH, the console and proc.run share one type
    console = CommandResult(2, "no such file\n", "", 0.1, "cat /x")  # merged output
    over_ssh = CommandResult(2, "", "no such file\n", 0.1, "cat /x")
    for result in (console, over_ssh):
        with pytest.raises(RemoteCommandError, match=r"'cat /x' exited 2: no such file") as info:
            result.check()
        assert Failure.of(info.value).family is Family.INFRASTRUCTURE
