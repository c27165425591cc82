"""Files on the host that runs the guests, local or at the other end of ``qemu+ssh``.

libvirt reads a domain's kernel, initrd and disks on *its* host and writes dumps and
console logs there too. For a lab host reached through ``qemu+ssh://`` those files are
shipped over SFTP into a cache keyed by content hash (so a kernel used by a hundred
attempts crosses the network once) and the evidence is fetched back into the local
artifact tree. For the local host all of it is the identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import shlex
import shutil
import stat
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit

from reprolab.errors import HostError, InfraError, UserError
from reprolab.modes import QEMU_GROUP
from reprolab.paths import runtime_root

#: Where shipped files live on a remote host (libvirt-qemu must be able to read them).
REMOTE_CACHE = PurePosixPath("/var/lib/reprolab/remote-cache")
REMOTE_RUN = PurePosixPath("/var/lib/reprolab/remote-run")


class HostFiles(Protocol):
    host: str

    def ship(self, path: Path) -> Path: ...
    def scratch(self, name: str) -> Path: ...
    def fetch(self, remote: Path, local: Path) -> bool: ...
    def remove(self, remote: Path) -> None: ...
    def overlay(self, base: Path, name: str) -> Path: ...
    def free_bytes(self) -> int: ...
    def close(self) -> None: ...


class LocalFiles:
    """The host is this machine: nothing to ship, nothing to fetch."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.host = "localhost"
        self.run_dir = run_dir or runtime_root()

    def ship(self, path: Path) -> Path:
        return path

    def scratch(self, name: str) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        return self.run_dir / name

    def fetch(self, remote: Path, local: Path) -> bool:
        if remote == local:
            return local.exists()
        if not remote.exists():
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(remote, local)
        return True

    def remove(self, remote: Path) -> None:
        remote.unlink(missing_ok=True)

    def overlay(self, base: Path, name: str) -> Path:
        raise NotImplementedError("local overlays are made by reprolab.image.build")

    def free_bytes(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.run_dir).free

    def close(self) -> None:
        return None


@cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """Content hash, memoised by (path, size, mtime) so big images are hashed once."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_key(path: Path) -> str:
    st = path.stat()
    return _digest(path, st.st_size, st.st_mtime_ns)[:24]


class SshFiles:
    """The host is reached over SSH (the same user, host and port as the libvirt URI)."""

    def __init__(self, uri: str, run_name: str) -> None:
        parts = urlsplit(uri)
        if not parts.hostname:
            raise UserError(f"libvirt URI {uri!r} names no host")
        self.host = parts.hostname
        self.port = parts.port or 22
        self.user = parts.username or "root"
        self.run_dir = REMOTE_RUN / run_name
        self._client: Any = None
        self._sftp: Any = None
        #: Remote directories made (and their modes set) by this run.
        self._made: set[PurePosixPath] = set()

    # -- connection ---------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._sftp is not None:
            return self._sftp
        import paramiko

        client = paramiko.SSHClient()
        # The same trust as libvirt's own ssh transport: the user's known_hosts, no TOFU.
        client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username=self.user, timeout=15)
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(f"host {self.host}: cannot open SSH for file transfer: {exc}"
                             ) from exc
        self._client = client
        self._sftp = client.open_sftp()
        return self._sftp

    def exec(self, argv: list[str]) -> str:
        self._connect()
        command = shlex.join(argv)
        _, out, err = self._client.exec_command(command, timeout=300)
        rc = out.channel.recv_exit_status()
        text: str = out.read().decode(errors="replace")
        if rc != 0:
            why = err.read().decode(errors="replace").strip().splitlines()
            raise HostError(f"host {self.host}: `{command}` exited {rc}: "
                             f"{why[-1] if why else ''}")
        return text

    def _mkdirs(self, path: PurePosixPath, *, private: bool = False) -> None:
        if path in self._made:
            return
        self.exec(["install", "-d", "-m", "0755", str(path.parent)])
        if not private:
            self.exec(["install", "-d", "-m", "0755", str(path)])
        else:
            self.exec(["install", "-d", "-m", "0700", str(path)])
            self._qemu_only(path, directory=True)
        self._made.add(path)

    def _qemu_only(self, path: PurePosixPath, *, directory: bool = False,
                   writable: bool = False) -> None:
        """What QEMU reads (images holding the guest's SSH host key) or writes (overlays):
        group libvirt-qemu and no access for others, as on the runner (reprolab.modes).
        An account that may not give files that group (not root, not in it) keeps them
        owner-only, and libvirt's DAC relabelling lets QEMU in for the run."""
        try:
            self.exec(["chgrp", QEMU_GROUP, str(path)])
            mode = "0750" if directory else "0660" if writable else "0640"
        except InfraError:
            mode = "0711" if directory else "0600"
        self.exec(["chmod", mode, str(path)])

    # -- the protocol -------------------------------------------------------------------
    def ship(self, path: Path) -> Path:
        sftp = self._connect()
        key = content_key(path)
        remote_dir = REMOTE_CACHE / key
        remote = remote_dir / path.name
        try:
            if stat.S_ISREG(sftp.stat(str(remote)).st_mode):
                return Path(str(remote))
        except OSError:
            pass
        self._mkdirs(remote_dir, private=True)
        tmp = f"{remote}.part"
        try:
            sftp.put(str(path), tmp)
            self._qemu_only(PurePosixPath(tmp))
            sftp.posix_rename(tmp, str(remote))
        except OSError as exc:
            raise HostError(f"host {self.host}: shipping {path} failed: {exc}") from exc
        return Path(str(remote))

    def scratch(self, name: str) -> Path:
        # Overlays, serial logs and vmcores of the run: guest memory is nobody else's.
        self._mkdirs(self.run_dir, private=True)
        return Path(posixpath.join(str(self.run_dir), name))

    def fetch(self, remote: Path, local: Path) -> bool:
        sftp = self._connect()
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            sftp.get(str(remote), str(local))
        except OSError:
            return False
        self.remove(remote)
        return True

    def remove(self, remote: Path) -> None:
        with contextlib.suppress(OSError):
            self._connect().remove(str(remote))

    def overlay(self, base: Path, name: str) -> Path:
        """A qcow2 overlay on the host, backed by a shipped base image."""
        remote_base = self.ship(base)
        target = self.scratch(name)
        self.exec(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                   str(remote_base), str(target)])
        self._qemu_only(PurePosixPath(str(target)), writable=True)
        return target

    def free_bytes(self) -> int:
        self._mkdirs(REMOTE_RUN)
        out = self.exec(["df", "--output=avail", "-B1", str(REMOTE_RUN)])
        try:
            return int(out.split()[-1])
        except (IndexError, ValueError) as exc:
            raise HostError(f"host {self.host}: cannot read free space: {out!r}") from exc

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(InfraError):
                self.exec(["rm", "-rf", str(self.run_dir)])
            self._client.close()
            self._client = self._sftp = None


def host_files(uri: str, run_name: str) -> HostFiles:
    from reprolab.virt.connection import is_remote

    # Local scratch (serial logs) goes in the session's own directory, which the session
    # removes on close and a later session reaps if this one was killed.
    return SshFiles(uri, run_name) if is_remote(uri) else LocalFiles(runtime_root() / run_name)
