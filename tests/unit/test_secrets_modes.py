"""Secrets and modes (issue 16 item 7): the guest's SSH host key is QEMU's to read and no
other local user's; the gateway to a lab host pins its host key; remote overlays are not
world-writable; a dossier is no more readable than its vmcore."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko
import pytest

from reprolab.image.build import restrict
from reprolab.modes import QEMU_GROUP, qemu_gid
from reprolab.proc import run
from reprolab.ssh import SshChannel
from reprolab.virt.hostfiles import SshFiles


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is under a 0700 root dir)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="reprolab-modes-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _can_read(user: str, path: Path) -> bool:
    return run(["runuser", "-u", user, "--", "cat", str(path)], check=False).ok


def _image_entry(root: Path) -> Path:
    entry = root / "minimal-0123456789abcdef"
    (entry / "hostkey").mkdir(parents=True)
    (entry / "initrd.img").write_bytes(b"initramfs holding ssh_host_ed25519_key")
    (entry / "hostkey" / "ssh_host_ed25519_key").write_text("PRIVATE")
    (entry / "image.json").write_text("{}")
    for path in (entry, entry / "hostkey"):
        path.chmod(0o755)
    for path in (entry / "initrd.img", entry / "hostkey" / "ssh_host_ed25519_key"):
        path.chmod(0o644)
    return entry


@pytest.mark.skipif(qemu_gid() is None, reason=f"group {QEMU_GROUP} missing (libvirt)")
def test_image_is_readable_by_qemu_and_nobody_else(shared_dir: Path) -> None:
    entry = _image_entry(shared_dir)
    initrd = entry / "initrd.img"
    assert _can_read("nobody", initrd)  # the hole as it was: 0644 under 0755
    restrict(entry)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o750
    assert stat.S_IMODE(initrd.stat().st_mode) == 0o640
    assert entry.stat().st_gid == initrd.stat().st_gid == qemu_gid()
    assert stat.S_IMODE((entry / "hostkey").stat().st_mode) == 0o700
    assert not _can_read("nobody", initrd)
    assert _can_read("libvirt-qemu", initrd)
    assert not _can_read("libvirt-qemu", entry / "hostkey" / "ssh_host_ed25519_key")


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


@pytest.fixture
def sshd() -> Iterator[tuple[int, paramiko.PKey]]:
    """A real SSH server on loopback that offers its host key and authenticates nobody."""
    key = paramiko.RSAKey.generate(2048)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(key)
            try:
                transport.start_server(server=_Server())
            except (paramiko.SSHException, EOFError):
                transport.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], key
    stop.set()
    listener.close()


def test_gateway_refuses_an_unknown_host_key(sshd: tuple[int, paramiko.PKey], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    port, key = sshd
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    client_key = tmp_path / "id"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(client_key))

    def jump() -> Any:
        guest_key = f"{key.get_name()} {key.get_base64()}"  # pinned for the guest only
        chan = SshChannel("127.0.0.1", 2222, client_key, guest_key,
                          gateway=("127.0.0.1", port, "root"))
        return chan._connection().gateway

    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        jump().open()
    # With the host's key in known_hosts the key check passes (and authentication fails:
    # this server lets nobody in), which is where the unpinned gateway got to before.
    (tmp_path / ".ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
    with pytest.raises(paramiko.SSHException) as info:
        jump().open()
    assert "known_hosts" not in str(info.value)


class _ThisHost(SshFiles):
    """SshFiles whose remote commands run on this machine: the modes are what is tested."""

    def exec(self, argv: list[str]) -> str:
        return run(argv).stdout


@pytest.mark.skipif(qemu_gid() is None, reason=f"group {QEMU_GROUP} missing (libvirt)")
def test_lab_host_scratch_and_overlays_are_not_world_accessible(shared_dir: Path) -> None:
    files = _ThisHost("qemu+ssh://root@lab.invalid/system", "session-test")
    files.run_dir = PurePosixPath(str(shared_dir / "remote-run" / "session-test"))
    scratch = Path(str(files.scratch("overlay-1.qcow2")))
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(scratch), "16M"])
    files._qemu_only(PurePosixPath(str(scratch)), writable=True)
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o660
    assert stat.S_IMODE(scratch.parent.stat().st_mode) == 0o750
    assert scratch.stat().st_gid == qemu_gid()
    assert not _can_read("nobody", scratch)
    assert _can_read("libvirt-qemu", scratch)


def test_dossier_is_no_more_readable_than_its_vmcore(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from reprolab.triage import vmcore as vmcore_mod

    dump = tmp_path / "vmcore.elf"
    dump.write_bytes(b"guest memory")
    dump.chmod(0o600)
    # The dossier's content is not under test here (the VM tests read real dumps).
    monkeypatch.setattr(vmcore_mod, "build_dossier", lambda *_a, **_k: {
        "vmcore": str(dump), "vmlinux": None, "debug_info": False, "errors": {},
        "dmesg_tail": ["[ 1.0] Kernel panic - not syncing: sysrq triggered crash"]})
    out = tmp_path / "attempt"
    old_umask = os.umask(0o022)
    try:
        report = vmcore_mod.write_dossier(dump, None, out)
    finally:
        os.umask(old_umask)
    for path in (report, out / "report.md"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    dump.chmod(0o644)
    vmcore_mod.write_dossier(dump, None, out)
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
