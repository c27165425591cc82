"""Guest calls end at their deadline or the guest's fatal event, whatever paramiko waits on.

The "guest" is a real TCP listener on loopback that accepts and then says nothing, the way
QEMU's port forwarder behaves in front of a wedged kernel: paramiko on its own would wait
for the SSH banner, then up to an hour for a channel.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprolab.guest.inflight import CallTimeout, GuestStopped, call_watched
from reprolab.image.hostkey import generate_host_key
from reprolab.ssh import SshChannel, generate_keypair


@pytest.fixture
def mute_guest() -> Iterator[int]:
    """A port that accepts connections and never answers; yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(srv.getsockname()[1])
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def _channel(tmp_path: Path, port: int) -> SshChannel:
    key, _ = generate_keypair(tmp_path / "k")
    host = generate_host_key(tmp_path / "h")
    return SshChannel("127.0.0.1", port, key, host.public)


def _calls_in_flight() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("guest-call")]


def test_call_to_a_wedged_guest_ends_at_its_deadline(tmp_path: Path, mute_guest: int) -> None:
    chan = _channel(tmp_path, mute_guest)
    polls: list[float] = []

    def poll(step: float) -> None:
        polls.append(step)  # the console would be read here
        time.sleep(step)

    def watch(fn, timeout, what):  # type: ignore[no-untyped-def]
        return call_watched(fn, timeout=timeout, what=what, poll=poll, stop=lambda: None,
                            abort=chan.abort)

    chan.watch = watch
    with pytest.raises(CallTimeout, match=r"guest command 'true': no answer within 2 s"):
        chan.run("true", timeout=2)
    assert polls, "the console was not read while the call was in flight"


def test_fatal_event_ends_the_call_at_once(tmp_path: Path, mute_guest: int) -> None:
    chan = _channel(tmp_path, mute_guest)
    seen: list[str] = []

    def stop() -> str | None:
        return "guest stopped: hard-lockup: watchdog: Watchdog detected hard LOCKUP" if len(
            seen) > 3 else None

    def poll(step: float) -> None:
        seen.append("read")
        time.sleep(step)

    chan.watch = lambda fn, timeout, what: call_watched(
        fn, timeout=timeout, what=what, poll=poll, stop=stop, abort=chan.abort)
    with pytest.raises(GuestStopped, match="hard LOCKUP"):
        chan.run("true", timeout=3600)
    # The abandoned worker was unblocked by closing its transport, not left waiting.
    for t in _calls_in_flight():
        t.join(timeout=30)
    assert not _calls_in_flight()


def test_result_and_errors_of_the_call_come_back() -> None:
    def never_stops() -> str | None:
        return None

    assert call_watched(lambda: 42, timeout=5, what="x", poll=time.sleep, stop=never_stops,
                        abort=lambda: None) == 42

    def boom() -> int:
        raise ValueError("in the worker")

    with pytest.raises(ValueError, match="in the worker"):
        call_watched(boom, timeout=5, what="x", poll=time.sleep, stop=never_stops,
                     abort=lambda: None)
