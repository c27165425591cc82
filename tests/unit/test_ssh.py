"""SSH helpers against real things: ssh-keygen, sockets, and a real dropbear on loopback.

A full login needs a guest (tests/integration/test_images.py); here a local dropbear with a
host key other than the pinned one shows the client refuses it before authenticating.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from reprolab.errors import InfraError
from reprolab.image.hostkey import generate_host_key
from reprolab.ssh import (
    CONNECT_TIMEOUT,
    CommandResult,
    RemoteCommandError,
    SshChannel,
    free_port,
    generate_keypair,
    pinned_host_keys,
)


def test_generate_keypair(tmp_path: Path) -> None:
    key, pub = generate_keypair(tmp_path / "k")
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600
    assert pub.startswith("ssh-ed25519 AAAA") and len(pub.split()) == 2
    loaded = paramiko.Ed25519Key.from_private_key_file(str(key))
    assert pub.split()[1] == loaded.get_base64()
    key2, pub2 = generate_keypair(tmp_path / "k")
    assert key2 == key and pub2 != pub


def test_free_port_is_bindable_and_varies() -> None:
    ports = {free_port() for _ in range(5)}
    assert len(ports) > 1
    port = ports.pop()
    assert 1024 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_command_result_check() -> None:
    ok = CommandResult(rc=0, stdout="x", stderr="", duration=0.1, command="true")
    assert ok.check() is ok and ok.ok
    bad = CommandResult(rc=3, stdout="", stderr="boom\n", duration=0.1, command="false")
    with pytest.raises(RemoteCommandError, match=r"'false' exited 3: boom") as info:
        bad.check()
    assert info.value.result is bad
    assert isinstance(info.value, InfraError)


def test_pinned_host_keys_use_bracketed_name(tmp_path: Path) -> None:
    host = generate_host_key(tmp_path)
    keys = pinned_host_keys("127.0.0.1", 2222, host.public)
    assert keys.lookup("[127.0.0.1]:2222") is not None
    assert keys.lookup("127.0.0.1") is None
    assert pinned_host_keys("h", 22, host.public).lookup("h") is not None
    with pytest.raises(InfraError, match="malformed"):
        pinned_host_keys("h", 22, "garbage")


def test_channel_wait_follows_the_call_deadline(tmp_path: Path) -> None:
    """A busy guest (a CFS storm under TCG) opened its channel after more than 10 s; the
    wait is the caller's deadline, and only a call without one gets the connect timeout."""
    transport = paramiko.Transport(socket.socket())
    conn = type("Conn", (), {"client": type("Client", (), {
        "get_transport": staticmethod(lambda: transport)})()})()
    chan = SshChannel("127.0.0.1", 1, tmp_path / "k", "")
    try:
        chan._limit_channel_wait(conn, 120.0)
        assert transport.channel_timeout == 120.0
        chan._limit_channel_wait(conn, 2.0)
        assert transport.channel_timeout == 2.0
        chan._limit_channel_wait(conn, None)
        assert transport.channel_timeout == CONNECT_TIMEOUT
    finally:
        transport.close()


def test_unreachable_guest_raises_infra_with_console_tail(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("booting\r\nKernel panic - not syncing: VFS\r\n")
    key, _ = generate_keypair(tmp_path / "k")
    host = generate_host_key(tmp_path / "h")
    chan = SshChannel("127.0.0.1", free_port(), key, host.public)
    with pytest.raises(InfraError, match=r"not reachable after 2 s") as info:
        chan.wait_ready(timeout=2, console_log=console)
    assert info.value.detail is not None and "Kernel panic" in info.value.detail


@pytest.fixture
def dropbear(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real dropbear on 127.0.0.1 with its own host key; yields (port, its public key)."""
    if shutil.which("dropbear") is None:
        pytest.skip("dropbear not installed (apt-get install dropbear-bin)")
    host = generate_host_key(tmp_path / "server")
    port = free_port()
    proc = subprocess.Popen(
        ["dropbear", "-F", "-E", "-s", "-r", str(host.dropbear), "-p", f"127.0.0.1:{port}",
         "-P", str(tmp_path / "dropbear.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, host.public
    finally:
        proc.terminate()
        proc.wait(10)


def test_wrong_host_key_is_refused_at_once(tmp_path: Path, dropbear: tuple[int, str]) -> None:
    port, _real = dropbear
    other = generate_host_key(tmp_path / "other")
    key, _ = generate_keypair(tmp_path / "k")
    chan = SshChannel("127.0.0.1", port, key, other.public)
    with pytest.raises(InfraError, match="host key other than the image's pinned one") as info:
        chan.wait_ready(timeout=600)  # refused at once: a wrong key is never retried
    assert isinstance(info.value.__cause__, paramiko.BadHostKeyException)


def test_right_host_key_gets_to_authentication(tmp_path: Path, dropbear: tuple[int, str]) -> None:
    port, real = dropbear
    key, _ = generate_keypair(tmp_path / "k")  # not authorized on this server
    chan = SshChannel("127.0.0.1", port, key, real)
    with pytest.raises(InfraError, match=r"refused key .*fw_cfg") as info:
        chan.wait_ready(timeout=600)  # not retried either
    assert isinstance(info.value.__cause__, paramiko.AuthenticationException)
