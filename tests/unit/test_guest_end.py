"""The end of a guest: read on until the kernel is done printing, no longer; tear down in
the background once dumped, and never return from close before the domain is gone.

A real Console (not attached: nothing arrives but what the test records) and a domain whose
libvirt state the test sets. The silence the console reports is fixed, so what is checked
is the decision, not a duration.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import reprolab.guest.handle as handle
from reprolab.console import Console
from reprolab.detect.events import PVPANIC
from reprolab.guest.handle import Guest
from reprolab.virt.domain import DomainState

PANIC = (b"[    7.09] sysrq: Trigger a crash\n"
         b"[    7.09] Kernel panic - not syncing: sysrq triggered crash\n"
         b"[    7.10] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0 #1\n")
TRAILER = b"[    7.20] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n"


class _Domain:
    name = "rl-test"

    def __init__(self) -> None:
        self.now = DomainState("running", "")
        self.destroys: list[str] = []
        self.unblock = threading.Event()

    def state(self) -> DomainState:
        return self.now

    def destroy(self) -> None:
        self.destroys.append(threading.current_thread().name)
        self.unblock.wait(5)
        self.now = DomainState("shutoff", "destroyed")


class _QuietConsole(Console):
    """Half a second of silence whenever asked; counts the reads settle makes."""

    reads = 0

    def silence(self) -> float:
        return 0.5

    def pump(self, timeout: float) -> bytes:
        self.reads += 1
        return b""


def _guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Guest, _Domain]:
    monkeypatch.setattr(handle, "SETTLE_MAX", 0.6)
    domain = _Domain()
    console = _QuietConsole("test:///default", domain.name, tmp_path / "console.log")
    guest = Guest(domain, console, tmp_path)  # type: ignore[arg-type]
    console._record(PANIC)
    assert guest.fatal_event is not None
    return guest, domain


def test_a_report_still_printing_is_read_on(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    guest, _ = _guest(tmp_path, monkeypatch)
    guest.settle()
    assert guest.console.reads > 0  # type: ignore[attr-defined]


def test_the_panic_trailer_ends_the_wait(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    guest, _ = _guest(tmp_path, monkeypatch)
    guest.console._record(TRAILER)
    guest.settle()
    assert guest.console.reads == 0  # type: ignore[attr-defined]


def test_a_guest_libvirt_holds_crashed_prints_no_more(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    guest, domain = _guest(tmp_path, monkeypatch)
    domain.now = DomainState("paused", "crashed")
    guest.poll(0)
    assert guest.seen(PVPANIC)
    reads = guest.console.reads  # type: ignore[attr-defined]
    guest.settle()
    assert guest.console.reads == reads  # type: ignore[attr-defined]


def test_close_waits_for_the_background_teardown(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    guest, domain = _guest(tmp_path, monkeypatch)
    guest.release()
    guest.release()  # once is enough
    closed = threading.Thread(target=guest.close)
    closed.start()
    closed.join(0.3)
    assert closed.is_alive(), "close returned while the domain was still being destroyed"
    domain.unblock.set()
    closed.join(5)
    assert not closed.is_alive()
    assert domain.destroys[0].startswith("teardown-") and len(domain.destroys) == 2
    assert domain.state().gone


def test_a_deferred_teardown_is_handed_back_not_dropped(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The session lets the destroy overlap the next boot: close returns at once with the
    running destroy, calls no second one, and the thread ends with the domain gone."""
    guest, domain = _guest(tmp_path, monkeypatch)
    guest.release()
    pending = guest.close(defer_teardown=True)
    assert pending is not None and pending.is_alive()
    assert not domain.state().gone
    domain.unblock.set()
    pending.join(5)
    assert domain.state().gone and len(domain.destroys) == 1


def test_nothing_to_defer_means_destroyed_on_close(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    guest, domain = _guest(tmp_path, monkeypatch)  # no dump, so never released
    domain.unblock.set()
    assert guest.close(defer_teardown=True) is None
    assert domain.state().gone


def test_the_session_waits_for_every_overlapped_teardown(tmp_path: Path) -> None:
    """No guest outlives the run: a session that let destroys overlap boots joins them all
    when it closes."""
    from reprolab.run.session import Session

    session = Session(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    done: list[int] = []
    for n in range(2):
        t = threading.Thread(target=lambda n=n: (threading.Event().wait(0.2), done.append(n)))
        t.start()
        session._teardowns[f"rl-test-{n}"] = t
    session.close()
    assert sorted(done) == [0, 1]


def test_libvirt_is_asked_at_once_whether_the_guest_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the guest runs its state is asked every 0.5 s; once it died, at every round of
    the wait, so pvpanic's stop ends the wait as soon as libvirt reports it."""
    import time

    guest, domain = _guest(tmp_path, monkeypatch)
    guest._last_state_poll = time.monotonic()  # just asked: the running-guest throttle holds
    domain.now = DomainState("crashed", "panicked")
    guest.settle()
    assert guest.seen(PVPANIC)
    assert guest.console.reads == 0  # type: ignore[attr-defined]


def _case(expect: dict[str, str]) -> object:
    from reprolab.case import CaseSpec

    return CaseSpec.from_marker("t", {"expect": expect, "attempts": 3, "until": "all"})


def test_only_a_complete_console_report_lets_the_evidence_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dump and triage may finish after the verdict only when nothing in them can change
    it: a fatal report on the console, no hang, no frame left to find in a stack."""
    from reprolab.detect.report import parse_log
    from reprolab.run.evidence import console_decides

    guest, _ = _guest(tmp_path, monkeypatch)
    guest.console._record(TRAILER)
    report = parse_log(PANIC + TRAILER)
    assert report is not None and report.fatal
    title = _case({"title": "kernel panic: sysrq triggered crash"})
    in_stack = _case({"in_stack": "double_rq_lock"})
    assert console_decides(title, guest, report, reproduced=True)  # type: ignore[arg-type]
    assert console_decides(title, guest, report, reproduced=False)  # type: ignore[arg-type]
    # A frame the console did not show may be in a vmcore stack: the dump decides.
    assert not console_decides(in_stack, guest, report, reproduced=False)  # type: ignore[arg-type]
    assert console_decides(in_stack, guest, report, reproduced=True)  # type: ignore[arg-type]
    assert not console_decides(title, guest, None, reproduced=False)  # type: ignore[arg-type]
    guest.nmi_position = 10  # the harness's NMI made it speak: a hang, stacks from the dump
    assert not console_decides(title, guest, report, reproduced=True)  # type: ignore[arg-type]


class _ClosedConsole(Console):
    """A console whose stream has ended: nothing more will be read."""

    def pump(self, timeout: float) -> bytes:
        self.eof = True
        return b""


@pytest.mark.parametrize(("now", "said"), [
    (DomainState("shutoff", "shutdown"), "the domain is shutoff (shutdown)"),
    (DomainState("running", ""), "the domain is running"),
], ids=["guest-powered-off", "stream-cut"])
def test_a_console_closed_during_boot_names_the_domains_state(
        tmp_path: Path, now: DomainState, said: str) -> None:
    """A closed console alone cannot tell a guest that powered off from a cut stream."""
    from reprolab.case import CaseSpec
    from reprolab.errors import GuestDied
    from reprolab.run.boot import _reach_ready

    domain = _Domain()
    console = _ClosedConsole("test:///default", domain.name, tmp_path / "console.log")
    guest = Guest(domain, console, tmp_path)  # type: ignore[arg-type]
    console.stop_check = None  # the eof path, not the state poll, sees the end first
    domain.now = now
    case = CaseSpec.from_marker("t.py::test_boot", {"boot_timeout": 5})
    with pytest.raises(GuestDied) as info:
        _reach_ready(guest, case, "REPROLAB-READY")
    assert str(info.value).startswith("console of rl-test closed while waiting for")
    assert str(info.value).endswith(said)


class _DumpingEvidence:
    """Evidence whose guest is dumped and destroyed when waited for (the test's stand-in
    for the thread); a released one holds no guest, whatever its triage does."""

    def __init__(self, released: bool) -> None:
        self.released = threading.Event()
        if released:
            self.released.set()
        self.waited = False

    def wait_released(self) -> None:
        self.waited = True
        self.released.set()


def test_guests_held_by_evidence_are_bounded(tmp_path: Path) -> None:
    """Each crashed guest still being dumped holds its whole memory: a new attempt waits
    for the oldest such guest while MAX_PENDING_EVIDENCE are held, never for the newest,
    and never for a triage whose guest is already gone."""
    from reprolab.run.session import MAX_PENDING_EVIDENCE, Session

    assert MAX_PENDING_EVIDENCE == 2
    session = Session(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    try:
        triaging = _DumpingEvidence(released=True)
        dumping = [_DumpingEvidence(released=False) for _ in range(2)]
        session._evidence = [triaging, *dumping]  # type: ignore[list-item]
        session._bound_evidence()
        assert [triaging.waited, dumping[0].waited, dumping[1].waited] == [False, True, False]
        session._bound_evidence()  # one guest held: nothing to wait for
        assert not dumping[1].waited
    finally:
        session._evidence = []
        session.close()


def test_closing_the_console_reaps_its_reader(tmp_path: Path) -> None:
    """``virsh console`` is killed and reaped at close, not left to pexpect's signal walk
    (SIGHUP, SIGCONT, SIGINT) with its sleeps; the log keeps what was read."""
    import os

    import pexpect

    console = Console("test:///default", "rl-test", tmp_path / "console.log")
    console._log = console.log_path.open("ab", buffering=0)
    # A reader that notes each hang-up it is asked for and carries on, as a wedged virsh.
    hups = tmp_path / "hups"
    child = pexpect.spawn("sh", ["-c", f"trap 'echo HUP >> {hups}' HUP INT; echo hi; "
                                       "while :; do sleep 0.05; done"])
    child.expect("hi")
    console._child = child
    pid = child.pid
    console.close()
    assert console._child is None and not child.isalive()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left behind
    assert not hups.exists()  # killed outright, never asked to hang up
    assert console.log_path.exists()


def test_a_stop_that_lands_during_the_wait_is_asked_for_soon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pvpanic's stop often reaches libvirt after the report's last byte: a silent read in
    settle is short, so the next question comes soon (a 0.25 s read cost restored attempts
    up to that much)."""
    guest, domain = _guest(tmp_path, monkeypatch)
    asked: list[float] = []

    def pump(timeout: float) -> bytes:
        asked.append(timeout)
        if len(asked) == 2:
            domain.now = DomainState("paused", "crashed")
        return b""

    monkeypatch.setattr(guest.console, "pump", pump)
    guest.settle()
    assert guest.seen(PVPANIC)
    assert len(asked) == 2 and max(asked) <= handle.SETTLE_POLL < 0.25


def test_a_guest_started_ahead_for_another_attempt_is_destroyed(tmp_path: Path) -> None:
    """The guest started behind an attempt is taken only by an attempt of the same case,
    kernel and image; any other attempt destroys it and boots its own, and so does the
    session's close for one nobody took."""
    from reprolab.run.session import Session
    from reprolab.run.startahead import StartAhead

    destroyed: list[str] = []

    class _Started:
        def __init__(self, name: str) -> None:
            self.domain = self
            self.name = name

        def destroy(self) -> None:
            destroyed.append(self.name)

    def ahead(key: str) -> StartAhead:
        return StartAhead(key, key, lambda: _Started(key)).start()  # type: ignore[arg-type,return-value]

    session = Session(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    session._started_ahead = ahead("case-a")
    assert session._take_started_ahead("case-b") is None
    assert destroyed == ["case-a"]
    session._started_ahead = ahead("case-b")
    taken = session._take_started_ahead("case-b")
    assert taken is not None and taken.take() is not None and destroyed == ["case-a"]
    session._started_ahead = ahead("case-c")
    session.close()
    assert destroyed == ["case-a", "case-c"]
