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
