"""When a snapshot session boots one more guest to restore from: only when the waits it
saves, over the attempts still to come, repay a boot and a save. A third guest comes when
attempts wait for the one restored ahead (still behind its last dump)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reprolab.case import CaseSpec
from reprolab.run import snapshot
from reprolab.run.session import Session
from reprolab.run.snapshot import SavedGuest, SnapshotSession


def _saved(name: str) -> SavedGuest:
    return SavedGuest(path=Path(f"/nonexistent/{name}.save"), name=name, xml="<domain/>",
                      boot_log=Path("/nonexistent"), serial=Path("/nonexistent"),
                      boot_seconds=2.0, save_seconds=0.5, ssh_port=None, host_key=None,
                      cmdline="")


def _case(attempts: int) -> CaseSpec:
    return CaseSpec.from_marker("t::sysrq", {"kernel": "stock", "expect": {"kind": "panic"},
                                             "attempts": attempts, "until": "all"})


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SnapshotSession:
    monkeypatch.setenv("REPROLAB_STATE", str(tmp_path / "state"))
    made = SnapshotSession(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    made.busy = lambda name: True  # type: ignore[method-assign]  # every guest being dumped
    return made


def test_a_third_guest_pays_only_for_waits_over_enough_attempts(session: SnapshotSession
                                                                 ) -> None:
    pool = [_saved("rl-a"), _saved("rl-b")]
    session._attempt_index = 5
    assert session._another_pays(_case(20), pool, 0.7)  # 16 attempts x 0.7 s > 2.5 s
    assert not session._another_pays(_case(20), pool, 0.0)  # nobody waited
    assert not session._another_pays(_case(6), pool, 0.7)  # 2 x 0.7 s < 2.5 s
    assert not session._another_pays(_case(20), [*pool, _saved("rl-c")], 5.0)  # full


class _Ahead:
    def __init__(self, saved: SavedGuest, done: bool) -> None:
        self.saved, self._done = saved, done

    def done(self) -> bool:
        return self._done


class _Guest:
    ready = True
    fatal_event = None


def _boot_with(session: SnapshotSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
               ahead_done: bool, last_wait: float) -> tuple[list[str], list[SavedGuest]]:
    """One boot() with two saved guests, the next one restored ahead: what it did."""
    did: list[str] = []
    case = _case(20)
    kernel: Any = type("K", (), {"key": "k"})()
    image: Any = type("I", (), {"key": "i", "disk": None})()
    pool = session._saved.setdefault(session._key(case, kernel, image), [])
    pool += [_saved("rl-a"), _saved("rl-b")]
    ahead = _Ahead(pool[1], ahead_done)
    session._ahead = ahead  # type: ignore[assignment]
    session._attempt_index = 5
    session.last_restore_wait = last_wait

    def cold(self: Session, *args: Any) -> tuple[Any, Path]:
        did.append("boot")
        return _Guest(), tmp_path / "serial"

    def restore(case: CaseSpec, directory: Path, saved: SavedGuest, image: Any, *,
                ahead: Any = None) -> tuple[Any, Path]:
        did.append(f"restore {saved.name}" + (" ahead" if ahead is not None else ""))
        return type("G", (), {"domain": type("D", (), {"name": saved.name})()})(), tmp_path

    monkeypatch.setattr(Session, "boot", cold)
    monkeypatch.setattr(snapshot, "_sync_before_save", lambda guest: True)
    monkeypatch.setattr(session, "_save", lambda *a, **k: _saved("rl-c"))
    monkeypatch.setattr(session, "_restore", restore)
    monkeypatch.setattr(session, "_restore_ahead", lambda *a, **k: None)
    session.boot(case, tmp_path, kernel, image)
    assert session._ahead is (None if did[-1].endswith("ahead") else ahead)
    return did, pool


def test_attempts_that_waited_for_the_guest_restored_ahead_boot_a_third(
        session: SnapshotSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The one restored ahead is still behind its dump and the last attempt waited 0.7 s
    for it: this attempt boots and saves a third guest, and leaves the one restored ahead
    to the next attempt."""
    did, pool = _boot_with(session, monkeypatch, tmp_path, ahead_done=False, last_wait=0.7)
    assert did == ["boot", "restore rl-c"]
    assert [saved.name for saved in pool] == ["rl-a", "rl-b", "rl-c"]


def test_a_guest_restored_ahead_in_time_is_taken(
        session: SnapshotSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    did, pool = _boot_with(session, monkeypatch, tmp_path, ahead_done=True, last_wait=0.7)
    assert did == ["restore rl-b ahead"] and len(pool) == 2


def test_no_wait_yet_no_third_guest(
        session: SnapshotSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    did, pool = _boot_with(session, monkeypatch, tmp_path, ahead_done=False, last_wait=0.0)
    assert did == ["restore rl-b ahead"] and len(pool) == 2
