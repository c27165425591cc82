"""The two exception families reprolab raises.

Kernel outcomes (reproduced, not reproduced, other crash) are results, never exceptions: a
harness that raises for a kernel crash invites someone to catch it as an infrastructure
fault, and a bisection that confuses the two names the wrong commit. So only two families
exist here, and every caller can tell by type whether to fix its input or retry elsewhere.
"""

from __future__ import annotations


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


class BootTimeout(InfraError):
    """The guest did not reach its ready marker in time."""


class GuestDied(InfraError):
    """The domain vanished or QEMU exited while reprolab still needed it."""


class LibvirtUnavailable(InfraError):
    """libvirtd cannot be reached at the URI given."""


class UntestableError(UserError):
    """The kernel under test cannot be built or booted at all (bisect exit 125).

    A patch that does not apply or a compiler error is the user's to fix in a plain run, but
    during bisection the same failure means "this commit cannot be tested", so it is a
    distinct subtype that bisection maps to 125 while everything else keeps its family.
    """
