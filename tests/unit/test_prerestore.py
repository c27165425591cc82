"""Restoring the next attempt's saved guest behind the current one: only once the last
attempt on that name has let go of it, and never leaving a domain nobody will use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprolab.run.prerestore import PreRestore


class _Domain:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def destroy(self) -> None:
        self.log.append(f"destroy {self.name}")

    def wait_gone(self) -> bool:
        self.log.append(f"gone {self.name}")
        return True


def _saved() -> Any:
    from reprolab.run.snapshot import SavedGuest

    return SavedGuest(path=Path("/nonexistent.save"), name="rl-a", xml="<domain/>",
                      boot_log=Path("/nonexistent"), serial=Path("/nonexistent"),
                      boot_seconds=1.0, save_seconds=1.0, ssh_port=None, host_key=None,
                      cmdline="")


def test_restores_only_after_the_last_attempt_let_go() -> None:
    log: list[str] = []
    restored = _Domain(log, "restored")

    def restore() -> Any:
        log.append("restore")
        return restored

    ahead = PreRestore(_saved(), (lambda: log.append("dumped"),),
                       _Domain(log, "stale"), restore).start()  # type: ignore[arg-type]
    assert ahead.take() is restored
    assert log == ["dumped", "destroy stale", "gone stale", "restore"]
    assert ahead.seconds is not None


def test_a_failed_restore_is_handed_back_as_none() -> None:
    def restore() -> Any:
        raise RuntimeError("no such save file")

    ahead = PreRestore(_saved(), (), None, restore).start()
    assert ahead.take() is None
    assert isinstance(ahead.error, RuntimeError)
    ahead.discard()  # nothing to destroy


def test_an_unused_guest_is_destroyed() -> None:
    log: list[str] = []
    ahead = PreRestore(_saved(), (), None,
                       lambda: _Domain(log, "restored")).start()  # type: ignore[arg-type,return-value]
    ahead.discard()
    assert log == ["destroy restored"]


class _Ahead:
    """A restore ahead that is done or still waiting for its guest's dump."""

    def __init__(self, saved: Any, done: bool) -> None:
        self.saved, self._done = saved, done

    def done(self) -> bool:
        return self._done


def _decide(tmp_path: Path, monkeypatch: Any, *, ahead_done: bool, attempts: int,
            index: int) -> tuple[Any, list[str], Any]:
    """What SnapshotSession.boot does with a guest restored ahead: (the one it keeps for
    the next attempt, what it did, the one it was given)."""
    from types import SimpleNamespace

    from reprolab.case import CaseSpec
    from reprolab.run import snapshot
    from reprolab.run.session import Session
    from reprolab.run.snapshot import SnapshotSession

    did: list[str] = []
    session = SnapshotSession(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    pool = [replace_name(_saved(), "rl-a"), replace_name(_saved(), "rl-b")]
    monkeypatch.setattr(SnapshotSession, "_key", staticmethod(lambda *_: "k"))
    session._saved["k"] = pool
    ahead = _Ahead(pool[0], ahead_done)
    session._ahead = ahead  # type: ignore[assignment]
    session._ahead_wait = 1.0  # the last attempt waited a second for its guest
    session._attempt_index = index
    guest = SimpleNamespace(ready=True, fatal_event=None,
                            domain=SimpleNamespace(name="rl-x"))

    def restore(self: Any, case: Any, directory: Any, saved: Any, image: Any,
                ahead: Any = None) -> Any:
        did.append(f"restore {saved.name}" + (" ahead" if ahead is not None else ""))
        return guest, Path("serial")

    monkeypatch.setattr(SnapshotSession, "_restore", restore)
    monkeypatch.setattr(SnapshotSession, "_restore_ahead", lambda *a, **k: None)
    monkeypatch.setattr(Session, "boot", lambda *a: (did.append("boot"), (guest, Path("s")))[1])
    monkeypatch.setattr(snapshot, "_sync_before_save", lambda g: True)
    monkeypatch.setattr(SnapshotSession, "_save",
                        lambda *a, **k: replace_name(_saved(), "rl-c"))
    case = CaseSpec.from_marker("t.py::t", {"attempts": attempts, "until": "all"})
    image = SimpleNamespace(disk=None)
    try:
        session.boot(case, tmp_path, None, image)  # type: ignore[arg-type]
        kept = session._ahead
    finally:
        session._ahead = None
        session._saved.clear()
        session.close()
    return kept, did, ahead


def replace_name(saved: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(saved, name=name)


def test_a_guest_restored_ahead_is_taken_when_ready(tmp_path: Path, monkeypatch: Any) -> None:
    kept, did, _ = _decide(tmp_path, monkeypatch, ahead_done=True, attempts=100, index=3)
    assert did == ["restore rl-a ahead"] and kept is None


def test_a_third_guest_is_booted_when_waits_would_cost_more(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    """98 attempts to come, each waiting a second for the guest restored ahead: a third
    guest's boot and save (2 s here) pays; the ahead one stays for the next attempt."""
    kept, did, ahead = _decide(tmp_path, monkeypatch, ahead_done=False, attempts=100,
                               index=3)
    assert did == ["boot", "restore rl-c"] and kept is ahead


def test_a_few_attempts_wait_for_the_guest_restored_ahead(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    kept, did, _ = _decide(tmp_path, monkeypatch, ahead_done=False, attempts=3, index=3)
    assert did == ["restore rl-a ahead"] and kept is None
