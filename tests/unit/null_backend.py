"""A null backend for the plugin: attempts without guests, their outcomes scripted.

Injected through the documented seam, the ``pytest_reprolab_backend`` hook
(:mod:`reprolab.hookspecs`), in the ``conftest.py`` of a pytester run: everything above the
backend (markers, the repro loop, modes, the pool, verdicts, hooks, results files) is the
real plugin. Not a mock of libvirt: nothing below ``run_attempt`` exists here.

A script is one word per attempt, per libvirt URI, read from the environment variable
``NULL_SCRIPT`` as JSON ``{"URI or *": ["reproduced", "not-reproduced", ...]}``:
``reproduced`` / ``other-crash`` / ``hang`` (a fatal event), ``not-reproduced``,
``infra`` (a GuestDied), ``host`` (a HostError: the host is unusable).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprolab.case import CaseSpec
from reprolab.errors import Failure, GuestDied, HostError
from reprolab.run.attempt import AttemptResult
from reprolab.run.verdict import Outcome

FATAL = {"reproduced": Outcome.REPRODUCED, "other-crash": Outcome.OTHER_CRASH,
         "hang": Outcome.HANG}


class NullGuest:
    """What the test body gets instead of a booted guest."""

    def sh(self, command: str, timeout: float = 60.0) -> str:
        return ""


class NullBackend:
    def __init__(self, uri: str, artifacts: Path) -> None:
        self.uri = uri
        self.artifacts = artifacts
        self.reaped: list[Any] = []
        self.portable_bundles = False
        self.on_crash: Callable[[AttemptResult, Any], None] | None = None
        script = json.loads(os.environ.get("NULL_SCRIPT", "{}"))
        self.script: list[str] = list(script.get(uri, script.get("*", [])))

    def check_expectation(self, case: CaseSpec) -> None:
        return None

    def close(self) -> None:
        return None

    def run_attempt(self, case: CaseSpec, index: int, body: Callable[[Any], None]
                    ) -> tuple[AttemptResult, BaseException | None]:
        word = self.script[(index - 1) % len(self.script)]
        directory = self.artifacts / case.name.split("::")[-1] / f"attempt-{index:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        if word in ("infra", "host"):
            exc = GuestDied("qemu exited under the guest") if word == "infra" else HostError(
                f"host {self.uri}: disk full for reproductions")
            result = AttemptResult(case.name, index, Outcome.INFRA_ERROR, directory, "null",
                                   failure=Failure.of(exc))
            result.write()
            return result, None
        body_error: BaseException | None = None
        try:
            body(NullGuest())
        except Exception as exc:
            body_error = exc
        outcome = FATAL.get(word, Outcome.NOT_REPRODUCED)
        title = "watchdog: BUG: soft lockup - CPU#0 stuck for 22s!" if word in FATAL else None
        result = AttemptResult(case.name, index, outcome, directory, "null", title=title,
                               kind="soft-lockup" if title else None,
                               signature="soft-lockup:spin" if title else None,
                               body_error=f"{type(body_error).__name__}: {body_error}"
                               if body_error else None)
        result.write()
        if word in FATAL and self.on_crash is not None:
            self.on_crash(result, None)
        return result, body_error
