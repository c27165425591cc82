"""The exception families reprolab raises, failures as values, and their exit codes.

Kernel outcomes (reproduced, not reproduced, other crash) are results, never exceptions: a
harness that raises for a kernel crash invites someone to catch it as an infrastructure
fault, and a bisection that confuses the two names the wrong commit. So only two exception
families exist here (user, infrastructure; the host's and the untestable kernel's are
subtypes), and every caller can tell by type whether to fix its input or retry elsewhere.
Where a failure must outlive its exception (an attempt's result, a results file) it is a
:class:`Failure` value, and :data:`EXIT_CODES` is the one table that turns it into an exit
code: nothing parses a message back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ReprolabError(Exception):
    """Base of reprolab's own errors; its message is one line meant for a person."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Longer context (a console tail, a build log excerpt) kept out of the one-line message.
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class UserError(ReprolabError):
    """Bad input the user must fix: a malformed test case, a missing file, a bad patch."""


class InfraError(ReprolabError):
    """The harness or the host failed (QEMU died, libvirt went away, boot timeout, disk full).

    Never a kernel verdict: an attempt that ends in one of these is retried or reported as
    an infrastructure failure, and bisection aborts (exit 128+) instead of blaming a commit.
    """


class HostError(InfraError):
    """The host itself is unusable for reproductions (disk full, its libvirt or file
    transfer unreachable): a lab pool takes the host out instead of retrying on it."""


class BootTimeout(InfraError):
    """The guest did not reach its ready marker in time."""


class GuestDied(InfraError):
    """The domain vanished or QEMU exited while reprolab still needed it."""


class LibvirtUnavailable(HostError):
    """libvirtd cannot be reached at the URI given."""


class UntestableError(UserError):
    """The kernel under test cannot be built or booted at all (bisect exit 125).

    A patch that does not apply or a compiler error is the user's to fix in a plain run, but
    during bisection the same failure means "this commit cannot be tested", so it is a
    distinct subtype that bisection maps to 125 while everything else keeps its family.
    """


class Family(enum.StrEnum):
    """Who has to act on a failure."""

    #: Input to fix: a test case, a file, a patch.
    USER = "user"
    #: The harness or the guest's plumbing failed (boot timeout, QEMU died): retry.
    INFRASTRUCTURE = "infrastructure"
    #: The host is unusable (disk full, libvirt gone): take it out of the pool.
    HOST = "host"
    #: The kernel under test cannot be built or booted (bisection skips the commit).
    KERNEL = "kernel"
    #: Someone pressed Ctrl-C (or sent SIGTERM): nobody failed, nothing was decided.
    INTERRUPTED = "interrupted"


#: The ``type`` of an interrupted attempt's failure.
INTERRUPTED = "Interrupted"


@dataclass(frozen=True)
class Failure:
    """A failure as a value: what an attempt (or a command) carries instead of a string to
    be parsed back. ``type`` is the exception's class name, ``message`` its one line."""

    family: Family
    type: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(family_of(exc), type(exc).__name__, str(exc))

    @classmethod
    def interrupted(cls, message: str) -> Failure:
        return cls(Family.INTERRUPTED, INTERRUPTED, message)

    def to_json(self) -> dict[str, str]:
        return {"family": str(self.family), "type": self.type, "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        return cls(Family(data["family"]), str(data["type"]), str(data["message"]))


def family_of(exc: BaseException) -> Family:
    """The family of any exception; an unexpected one is the harness's (infrastructure)."""
    if isinstance(exc, KeyboardInterrupt):
        return Family.INTERRUPTED
    if isinstance(exc, UntestableError):
        return Family.KERNEL
    if isinstance(exc, UserError):
        return Family.USER
    if isinstance(exc, HostError):
        return Family.HOST
    return Family.INFRASTRUCTURE


class ExitContext(enum.Enum):
    """Who reads the exit code: a person at the CLI, or ``git bisect run``."""

    CLI = "cli"
    BISECT_STEP = "bisect-step"


#: The one table from failure family to exit code. ``git bisect run`` reads 125 as "skip
#: this commit" and 128+ as "abort", and 1 as "bad": so no failure may exit 1 there.
EXIT_CODES: Mapping[Family, Mapping[ExitContext, int]] = {
    Family.USER: {ExitContext.CLI: 2, ExitContext.BISECT_STEP: 129},
    Family.KERNEL: {ExitContext.CLI: 2, ExitContext.BISECT_STEP: 125},
    Family.INFRASTRUCTURE: {ExitContext.CLI: 3, ExitContext.BISECT_STEP: 128},
    Family.HOST: {ExitContext.CLI: 3, ExitContext.BISECT_STEP: 128},
    Family.INTERRUPTED: {ExitContext.CLI: 130, ExitContext.BISECT_STEP: 130},
}


def exit_code(failure: Failure | BaseException, context: ExitContext) -> int:
    """The exit code of a failure (or of the exception that carries it) for ``context``."""
    family = failure.family if isinstance(failure, Failure) else family_of(failure)
    return EXIT_CODES[family][context]
