"""The bisection oracle that runs real guests: build the commit, boot, run the test case.

For each commit the kernel is built once from the tree at that commit with the test case's
own recipe (base config, fragments, patches), through the kernel cache, so every step's
build is a ccache-fed rebuild of the few files the commits between steps touched. Attempts
then run through the same loop (:mod:`reprolab.run.loop`) as ``reprolab run``, and
:func:`attempt_outcome` says what each one means to the step.

A commit whose kernel does not build, or never reaches the image's ready marker (a boot
timeout, or a crash other than the target before it), cannot be tested
(:class:`UntestableError`, git bisect's 125); every other infrastructure failure stays one,
so the bisection aborts instead of blaming a commit for a host fault.

Options (``--oracle-opt KEY=VALUE``): ``uri`` (libvirt URI), ``snapshot=1`` (restore a
post-boot snapshot per attempt instead of booting; see :mod:`reprolab.run.snapshot`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from reprolab.bisect.driver import AttemptOutcome
from reprolab.bisect.oracles import OracleContext, attempt_outcome
from reprolab.errors import BootTimeout, InfraError, UntestableError
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.resolve import resolve_kernel
from reprolab.kernel.spec import KernelSpec
from reprolab.replay import LoadedCase, at_commit, kernel_to_data, load_testcase
from reprolab.run.attempt import AttemptResult
from reprolab.run.loop import run_attempt
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome
from reprolab.virt import DEFAULT_URI

log = logging.getLogger(__name__)

#: ``git bisect run`` starts each step in the kernel tree, so a test case named relative to
#: where ``reprolab bisect`` was started is found through this (inherited) variable.
CASE_DIR_ENV = "REPROLAB_CASE_DIR"
#: Infrastructure errors that, on a freshly built kernel, mean "this kernel does not boot".
BOOT_FAILURES: tuple[type[InfraError], ...] = (BootTimeout,)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "yes", "true", "on")


def boot_failed(result: AttemptResult) -> bool:
    """The kernel never became a usable guest: a boot timeout, or a crash before ready.

    A crash before the ready marker that is not the target would otherwise count as an
    "other crash", which decides nothing, and the step would boot it again to the cap.
    (``boot_seconds`` is only set once the guest reached its ready marker.)
    """
    if result.outcome is Outcome.INFRA_ERROR:
        failure = result.failure
        return failure is not None and failure.type in {t.__name__ for t in BOOT_FAILURES}
    return (result.outcome in (Outcome.OTHER_CRASH, Outcome.HANG)
            and result.boot_seconds is None)


class VmOracle:
    """Builds each commit once and runs attempts of one test case on it."""

    def __init__(self, context: OracleContext, loaded: LoadedCase) -> None:
        self.context = context
        self.loaded = loaded
        self.body = loaded.body()
        self.recipe: KernelSpec = loaded.kernel_spec()
        uri = context.options.get("uri", DEFAULT_URI)
        session: Session
        if _truthy(context.options.get("snapshot")):
            from reprolab.run.snapshot import SnapshotSession

            session = SnapshotSession(uri=uri, artifacts=context.artifacts)
        else:
            session = Session(uri=uri, artifacts=context.artifacts)
        self.session = session
        self._kernels: dict[str, KernelArtifacts] = {}
        self._attempts: dict[str, int] = {}

    def spec_for(self, commit: str) -> KernelSpec:
        return at_commit(self.recipe, self.context.repo, commit)

    def kernel_for(self, commit: str) -> KernelArtifacts:
        """Build (or take from the cache) the commit's kernel; a failed build is untestable."""
        if commit not in self._kernels:
            where = self.context.artifacts / commit[:12]
            self._kernels[commit] = resolve_kernel(
                self.spec_for(commit), artifacts_dir=where, bisecting=True,
                progress=lambda msg: log.info("%s: %s", commit[:12], msg),
            )
        return self._kernels[commit]

    def attempt(self, commit: str) -> AttemptOutcome:
        self.kernel_for(commit)
        index = self._attempts.get(commit, 0) + 1
        self._attempts[commit] = index
        case = self.loaded.case.with_overrides(kernel=kernel_to_data(self.spec_for(commit)))
        self.session.artifacts = self.context.artifacts / commit[:12]
        result, body_error = run_attempt(self.session, case, index, self.body)
        if body_error is not None:
            log.warning("%s attempt %d: the test body failed: %s", commit[:12], index,
                        body_error)
        if boot_failed(result):
            raise UntestableError(
                f"kernel at {commit[:12]} did not boot: {result.error or result.title} "
                f"(artifacts: {result.directory})"
            )
        return attempt_outcome(result)

    def close(self) -> None:
        self.session.close()


def make_oracle(ctx: OracleContext) -> VmOracle:
    """The ``vm`` oracle (see :data:`reprolab.bisect.oracles.ORACLES`)."""
    search = [Path(os.environ[CASE_DIR_ENV])] if os.environ.get(CASE_DIR_ENV) else []
    loaded = load_testcase(ctx.testcase, search=search)
    # Steps run from the kernel tree: let them find the case where this process found it.
    os.environ.setdefault(CASE_DIR_ENV, os.getcwd())
    return VmOracle(ctx, loaded)
