"""Hooks a lab implements in its ``conftest.py`` to extend reprolab without forking it.

Registered by the plugin through ``pytest_addhooks``; implement any of them as a plain
function in a ``conftest.py`` (or a plugin). They are called in the pytest process that ran
the attempt (an xdist worker under ``-n``), after the attempt's files are written, so a hook
may upload ``attempt.directory`` or open a ticket from it. An exception in a hook fails the
test (loudly, after the evidence is on disk): a lab's upload that breaks is a bug to see.

Example::

    def pytest_reprolab_crash_detected(item, report, vmcore, attempt):
        if vmcore is not None:
            upload(vmcore, title=report.title if report else attempt.title)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from reprolab.detect.report import CrashReport
    from reprolab.run.attempt import AttemptResult

hookspec = pytest.hookspec


@hookspec
def pytest_reprolab_attempt_finished(item: pytest.Item, attempt: AttemptResult) -> None:
    """An attempt of ``item`` ended (any outcome, infrastructure errors included);
    ``attempt.to_json()`` is what ``result.json`` holds."""


@hookspec
def pytest_reprolab_crash_detected(item: pytest.Item, report: CrashReport | None,
                                   vmcore: Path | None, attempt: AttemptResult) -> None:
    """The guest of an attempt of ``item`` had a fatal event (panic, lockup, hang, ...).

    ``report`` is the console's crash report (None when the console said nothing usable,
    as for a silent hang); ``vmcore`` the dump when the case asked for one and it worked.
    """


@hookspec(firstresult=True)
def pytest_reprolab_backend(config: pytest.Config, uri: str) -> Any:
    """The object that runs attempts for ``uri``, instead of a libvirt session.

    The seam for running reprolab tests without guests (a null backend in reprolab's own
    acceptance tests) or on a lab's own machinery. Return None to get the default
    (:class:`reprolab.run.session.Session`). What is returned must provide what the plugin
    uses of a session: ``run_attempt(case, index, body)`` returning ``(AttemptResult, body
    failure or None)``, ``check_expectation(case)``, ``close()``, the attributes ``uri``,
    ``artifacts`` (a Path), ``reaped`` (a list) and ``portable_bundles``, and an ``on_crash``
    attribute it calls as ``on_crash(attempt, report)`` after an attempt with a fatal event.
    Optionally ``finish_evidence()`` and ``final(attempt)``: the plugin then waits, before
    the test reports, for vmcores and dossiers written after their attempts' verdicts, and
    records each attempt as its files finally say.
    """
