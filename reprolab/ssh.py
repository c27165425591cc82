"""SSH into guests: per-run keys, pinned host keys, free ports, retried connects.

Trust is decided before the guest boots. The guest's host key is made at image build
(:mod:`reprolab.image.hostkey`) and is the only key accepted (paramiko ``RejectPolicy`` with
the key in a ``HostKeys`` object): with a port forwarded on 127.0.0.1, any local process
could be listening there, so trust-on-first-use would believe whatever answered first. The
client key is made per run and reaches the guest through fw_cfg, so no image holds a key
that opens every guest built from it.
"""

from __future__ import annotations

import base64
import logging
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import paramiko
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from reprolab.errors import InfraError
from reprolab.proc import CommandResult, RemoteCommandError
from reprolab.proc import run as run_local

#: Seconds one TCP connect + SSH handshake may take before the attempt is retried.
CONNECT_TIMEOUT = 10.0

T = TypeVar("T")


class Watch(Protocol):
    """Runs a guest call to completion, its deadline, or the guest's fatal event."""

    def __call__(self, fn: Callable[[], T], timeout: float | None, what: str) -> T: ...


class CommandTimeout(InfraError):
    """A guest command outlived its timeout (the guest may be hung: check the console)."""


def generate_keypair(directory: Path) -> tuple[Path, str]:
    """A fresh ed25519 client key pair in ``directory``: (private key path, public line).

    The public file is 0644 so QEMU (user libvirt-qemu) can read it for ``-fw_cfg``; the
    directory must be traversable by that user too (runs live under paths.runtime_root()).
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    key.unlink(missing_ok=True)
    Path(str(key) + ".pub").unlink(missing_ok=True)
    run_local(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reprolab-run", "-f", key])
    pub = Path(str(key) + ".pub")
    pub.chmod(0o644)
    fields = pub.read_text().split()
    return key, f"{fields[0]} {fields[1]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Racy by nature: the port is released before QEMU binds it, so another process may take
    it in between. The caller handles that by treating a domain that fails to start with a
    host-forwarding error ("Could not set up host forwarding rule") as a collision: pick a
    new port and start again (a bounded number of times). Two reprolab guests cannot both
    get the same port from one kernel in quick succession, since the kernel hands out
    ephemeral ports in sequence; the race is only with unrelated processes.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned_host_keys(host: str, port: int, host_key: str) -> paramiko.HostKeys:
    """A HostKeys holding only ``host_key`` under the name paramiko looks up for host:port."""
    fields = host_key.split()
    if len(fields) < 2:
        raise InfraError(f"malformed pinned host key {host_key!r}")
    key = paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1]))
    name = host if port == 22 else f"[{host}]:{port}"
    keys = paramiko.HostKeys()
    keys.add(name, fields[0], key)
    return keys


class _Silence(logging.Filter):
    """Drops paramiko's per-attempt tracebacks while the guest is still coming up.

    Until sshd listens, QEMU's forwarder accepts and then resets each connection, and
    paramiko logs every such failure at ERROR with a traceback; the last one is reported
    in the InfraError if waiting fails.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _retriable(exc: BaseException) -> bool:
    # A wrong host key or a refused key is an answer, not a transient failure: the guest
    # writes authorized_keys before it starts sshd, so neither changes by waiting.
    if isinstance(exc, (paramiko.BadHostKeyException, paramiko.AuthenticationException)):
        return False
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException))


class SshChannel:
    """Commands over SSH to one guest, through a fabric Connection with a pinned host key."""

    def __init__(
        self, host: str, port: int, key: Path, host_key: str, user: str = "root",
        *, gateway: tuple[str, int, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.key = key
        self.host_key = host_key
        self.user = user
        #: (host, port, user) of a lab host whose loopback the guest's port is forwarded
        #: on: the guest is reached through it (direct-tcpip), never exposed further.
        self.gateway = gateway
        self._conn: Any = None
        #: Set by the guest handle: runs each call with its deadline while reading the console.
        self.watch: Watch | None = None

    def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        from fabric import Config, Connection  # heavy import, only when a guest is used

        jump = None
        if self.gateway is not None:
            gw_host, gw_port, gw_user = self.gateway
            jump = Connection(gw_host, user=gw_user, port=gw_port,
                              connect_timeout=int(CONNECT_TIMEOUT))
            # fabric auto-adds unknown host keys; the lab host is held to the same trust as
            # libvirt's ssh transport and the file transfers: the user's known_hosts only.
            jump.client.load_system_host_keys()
            jump.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn = Connection(
            self.host,
            user=self.user,
            port=self.port,
            gateway=jump,
            config=Config(overrides={"load_ssh_configs": False}),
            connect_timeout=int(CONNECT_TIMEOUT),
            connect_kwargs={
                "key_filename": [str(self.key)],
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": CONNECT_TIMEOUT,
                "auth_timeout": CONNECT_TIMEOUT,
            },
        )
        client: paramiko.SSHClient = conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned = pinned_host_keys(self.host, self.port, self.host_key)
        local = client.get_host_keys()
        local.clear()
        local.update(pinned)
        self._conn = conn
        return conn

    def wait_ready(self, timeout: float, *, console_log: Path | None = None) -> None:
        """Retry connecting until the guest answers ``true`` or ``timeout`` seconds pass.

        On timeout raises :class:`InfraError` naming the last failure, with the tail of
        ``console_log`` (if given) as its detail: what the guest printed is the only clue
        when its sshd never came up.
        """
        from invoke.exceptions import CommandTimedOut, UnexpectedExit

        def retriable(exc: BaseException) -> bool:
            # A guest still starting may be too slow to answer, or half up: try again.
            return _retriable(exc) or isinstance(exc, (CommandTimedOut, UnexpectedExit))

        retrying = Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.25, max=2.0),
            retry=retry_if_exception(retriable),
            reraise=False,
        )
        quiet = _Silence()
        transport_log = logging.getLogger("paramiko.transport")
        transport_log.addFilter(quiet)
        try:
            for attempt in retrying:
                with attempt:
                    self._drop()
                    conn = self._connection()
                    conn.open()
                    # fabric directly, not self.run: its SSH errors must stay retriable here.
                    conn.run("true", hide=True, warn=False, pty=False, in_stream=False,
                             timeout=int(CONNECT_TIMEOUT))
        except RetryError as exc:
            last = exc.last_attempt.exception()
            self._drop()
            raise InfraError(
                f"guest SSH on {self.host}:{self.port} not reachable after {timeout:.0f} s: "
                f"{type(last).__name__}: {last}",
                detail=_tail(console_log),
            ) from last
        except paramiko.BadHostKeyException as exc:
            self._drop()
            raise InfraError(
                f"guest on {self.host}:{self.port} presented a host key other than the "
                f"image's pinned one: refusing to talk to it",
                detail=_tail(console_log),
            ) from exc
        except paramiko.AuthenticationException as exc:
            self._drop()
            raise InfraError(
                f"guest on {self.host}:{self.port} refused key {self.key}: did the run's "
                f"public key reach it through fw_cfg (opt/reprolab/authorized_keys)? ({exc})",
                detail=_tail(console_log),
            ) from exc
        finally:
            transport_log.removeFilter(quiet)

    def _watched(self, fn: Callable[[], T], timeout: float | None, what: str) -> T:
        """Run a call under the guest's watch (deadline + console read), or directly."""
        if self.watch is None:
            return fn()
        return self.watch(fn, timeout, what)

    def _limit_channel_wait(self, conn: Any, timeout: float | None) -> None:
        """paramiko waits an hour for a channel by default; a wedged guest never opens one.

        The call's own timeout bounds the wait, not the connect timeout: a guest whose CPUs a
        scenario keeps busy (a CFS bandwidth storm under TCG) may take longer than 10 s to
        open a channel and still answer well within the deadline the caller gave.
        """
        transport = conn.client.get_transport()
        if transport is not None:
            transport.channel_timeout = timeout if timeout is not None else CONNECT_TIMEOUT

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run ``cmd`` in the guest; an argv list is quoted with :func:`shlex.join`.

        ``timeout`` bounds the whole call (connect, channel, command); a guest under watch
        (see :mod:`reprolab.guest.inflight`) also ends it at the guest's first fatal event.
        """
        command = cmd if isinstance(cmd, str) else shlex.join(cmd)
        return self._watched(lambda: self._run(command, timeout, check), timeout,
                             f"guest command {command!r}")

    def _run(self, command: str, timeout: float | None, check: bool) -> CommandResult:
        from invoke.exceptions import CommandTimedOut

        start = time.monotonic()
        conn = None
        try:
            conn = self._connection()
            if not conn.is_connected:
                conn.open()
            self._limit_channel_wait(conn, timeout)
            res = conn.run(
                command, hide=True, warn=True, pty=False, in_stream=False,
                timeout=None if timeout is None else max(1, round(timeout)),
            )
        except CommandTimedOut as exc:
            raise CommandTimeout(
                f"guest command {command!r} still running after {timeout} s"
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if conn is None or conn is self._conn:  # not one an abandoned call's abort replaced
                self._drop()
            raise InfraError(
                f"SSH to {self.host}:{self.port} failed running {command!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        result = CommandResult(
            rc=int(res.return_code), stdout=str(res.stdout), stderr=str(res.stderr),
            duration=time.monotonic() - start, command=command,
        )
        return result.check() if check else result

    def put(self, local: Path | str, remote: str, *, mode: int | None = None,
            timeout: float | None = None) -> None:
        """Copy a local file into the guest.

        Streams it into ``cat`` over an exec channel rather than SFTP: dropbear has no SFTP
        subsystem of its own, and this works with any guest that has a shell.
        """
        data = Path(local).read_bytes()
        self._watched(lambda: self._put(data, remote, mode, timeout), timeout,
                      f"copy to guest {remote}")

    def _put(self, data: bytes, remote: str, mode: int | None, timeout: float | None) -> None:
        conn = self._connection()
        if not conn.is_connected:
            conn.open()
        self._limit_channel_wait(conn, timeout)
        command = f"cat > {shlex.quote(remote)}"
        if mode is not None:
            command += f" && chmod {mode:o} {shlex.quote(remote)}"
        chan = conn.client.get_transport().open_session()
        try:
            chan.exec_command(command)
            chan.sendall(data)
            chan.shutdown_write()
            rc = chan.recv_exit_status()
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
        finally:
            chan.close()
        if rc != 0:
            raise RemoteCommandError(
                CommandResult(rc=rc, stdout="", stderr=err, duration=0.0, command=command)
            )

    def abort(self) -> None:
        """Unblock a call in flight in another thread: closing the transport ends its waits."""
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> SshChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tail(path: Path | None, lines: int = 40) -> str | None:
    if path is None or not path.exists():
        return None
    text = path.read_text(errors="replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])
