"""A guest command the guest never answers: a hang when a fresh probe gets nothing either.

The same wedge is a kernel verdict whether the harness notices it after the body (the
liveness probe) or while the body waits on a command; only a guest that still answers a
probe leaves the timeout an infrastructure error. A real Guest and Console (not attached)
and a scripted SSH whose calls time out or answer as the test says.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

import reprolab.run.liveness as liveness
import reprolab.run.session as session
from reprolab.console import Console
from reprolab.detect.events import UNRESPONSIVE
from reprolab.errors import InfraError
from reprolab.guest.handle import Guest
from reprolab.guest.inflight import CallTimeout
from reprolab.run.session import run_body
from reprolab.virt.domain import DomainState


class _Domain:
    name = "rl-test"

    def state(self) -> DomainState:
        return DomainState("running", "")


class _Result:
    stdout = ""


class _Ssh:
    """Every call times out until ``answers`` is set; records what it was asked."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def run(self, command: str, timeout: float, check: bool) -> _Result:
        self.asked.append(command)
        if command == "true" and self.answers:
            return _Result()
        raise CallTimeout(f"guest command {command!r}: no answer within {timeout:.0f} s")

    def close(self) -> None:
        pass


def _guest(tmp_path: Path, ssh: _Ssh) -> Guest:
    (tmp_path / "console.log").write_bytes(b"REPROLAB-READY\n")
    console = Console("test:///default", "rl-test", tmp_path / "console.log")
    guest = Guest(_Domain(), console, tmp_path)  # type: ignore[arg-type]
    guest.ssh = ssh  # type: ignore[assignment]
    return guest


@pytest.fixture(autouse=True)
def _short_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real probe, with a deadline a unit test can wait out.
    monkeypatch.setattr(session, "probe_alive", partial(liveness.probe_alive, timeout=0.3))
    # No console arrives here: the wait for a crash's report would only cost time.
    monkeypatch.setattr(Guest.crashed_during, "__defaults__", (0.1,))


def _body(guest: Guest) -> None:
    guest.sh("cat /proc/loadavg", timeout=120)


def test_a_command_and_the_probe_unanswered_is_a_hang(tmp_path: Path) -> None:
    ssh = _Ssh(answers=False)
    guest = _guest(tmp_path, ssh)
    notes: list[str] = []
    assert run_body(guest, _body, notes) == (None, None)
    assert ssh.asked[0] == "cat /proc/loadavg" and "true" in ssh.asked
    assert guest.fatal_event is not None and guest.fatal_event.kind == UNRESPONSIVE
    assert "after a command of the test body got none" in guest.fatal_event.line
    assert any("stopped by an unresponsive guest" in n for n in notes), notes


def test_a_guest_that_answers_the_probe_leaves_an_infra_error(tmp_path: Path) -> None:
    ssh = _Ssh(answers=True)
    guest = _guest(tmp_path, ssh)
    body_error, infra = run_body(guest, _body, [])
    assert body_error is None and isinstance(infra, CallTimeout)
    assert guest.fatal_event is None and ssh.asked == ["cat /proc/loadavg", "true"]


def test_other_infra_errors_are_not_probed(tmp_path: Path) -> None:
    ssh = _Ssh(answers=False)
    guest = _guest(tmp_path, ssh)

    def body(g: Guest) -> None:
        raise InfraError("SSH: connection refused")

    body_error, infra = run_body(guest, body, [])
    assert body_error is None and isinstance(infra, InfraError)
    assert ssh.asked == [] and guest.fatal_event is None
