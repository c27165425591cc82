"""The one way reprolab runs a subprocess.

Every external tool (make, git, qemu-img, ssh-keygen, cpio) goes through :func:`run`, so
argument lists are never assembled into shell strings and every failure carries the command,
its exit code and the tail of its output.

Each command runs in its own process group, and anything that stops the wait (Ctrl-C, a
SIGTERM turned into an exception, a timeout) ends the whole group: ``make -j`` killed alone
leaves its compilers running, which is what a plain ``subprocess.run`` does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reprolab.errors import InfraError, UserError


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: one shape for a process on this host (:func:`run`), a
    guest command over SSH and one on the guest's console shell (where stdout and stderr
    arrive merged, all in ``stdout``)."""

    rc: int
    stdout: str
    stderr: str
    duration: float = 0.0
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, lines: int = 20) -> str:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> CommandResult:
        """For a guest command: self when rc == 0, else :class:`RemoteCommandError` (an
        infrastructure error, whichever channel ran it)."""
        if self.rc != 0:
            raise RemoteCommandError(self)
        return self


class RemoteCommandError(InfraError):
    """A guest command exited non-zero where the caller required success."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(
            f"guest command {result.command!r} exited {result.rc}: "
            f"{(result.stderr or result.stdout).strip()[-200:]}",
            detail=f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
        )
        self.result = result


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    stdin: str | bytes | None = None,
    log: Path | None = None,
    error: type[UserError] | type[InfraError] = InfraError,
) -> CommandResult:
    """Run ``argv`` and return its outcome.

    ``log`` streams stdout and stderr into a file instead of capturing them, for builds whose
    output is too long to hold but must be kept as an artifact. ``error`` chooses the family
    raised when ``check`` is set and the command fails: a compiler error in the user's tree is
    a :class:`UserError`, a failing ``qemu-img`` is an :class:`InfraError`.
    """
    args = tuple(os.fspath(a) for a in argv)
    full_env = None if env is None else {**os.environ, **env}
    start = time.monotonic()
    data = stdin.encode() if isinstance(stdin, str) else stdin
    stdin_arg = subprocess.PIPE if data is not None else subprocess.DEVNULL
    try:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as sink:
                proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdin=stdin_arg,
                                        stdout=sink, stderr=subprocess.STDOUT, process_group=0)
                out_b, err_b = _communicate(proc, data, timeout, args)
            out_b, err_b = b"", b""
        else:
            proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdin=stdin_arg,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    process_group=0)
            out_b, err_b = _communicate(proc, data, timeout, args)
    except FileNotFoundError as exc:
        raise error(
            f"{args[0]}: command not found (install it or run scripts/bootstrap.sh)"
        ) from exc
    done = CommandResult(
        rc=proc.returncode,
        stdout=out_b.decode(errors="replace"),
        stderr=err_b.decode(errors="replace"),
        duration=time.monotonic() - start,
        command=shlex.join(args),
    )
    if check and not done.ok:
        where = f" (log: {log})" if log is not None else ""
        last = done.tail(1) if log is None else _last_line(log)
        raise error(
            f"{' '.join(args[:4])}{' ...' if len(args) > 4 else ''} failed with exit "
            f"{done.rc}{where}: {last}",
            detail=done.tail(40) if log is None else None,
        )
    return done


def _communicate(proc: subprocess.Popen[bytes], data: bytes | None, timeout: float | None,
                 args: tuple[str, ...]) -> tuple[bytes, bytes]:
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_group(proc)
        raise InfraError(f"{' '.join(args[:3])}: timed out after {timeout:.0f} s") from exc
    except BaseException:
        kill_group(proc)
        raise
    return out or b"", err or b""


def kill_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """End ``proc`` and everything it started: SIGTERM to its group, SIGKILL after ``grace``
    (long enough for a reprolab child to unwind: remove its workspace, end its own groups)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children may not be (make's compilers outlive a make
        # that exits on SIGTERM for a moment): the group still answers to its id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def interactive(argv: Sequence[str | os.PathLike[str]]) -> int:
    """Hand the terminal to ``argv`` (a console, a shell) and return its exit status.

    The one exception to :func:`run`'s own process group and closed stdin: the user types
    into this command, so it shares the terminal and receives its signals.
    """
    args = tuple(os.fspath(a) for a in argv)
    try:
        return subprocess.call(args)
    except FileNotFoundError as exc:
        raise InfraError(f"{args[0]}: command not found") from exc
