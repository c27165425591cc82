"""The plugin's verdict logic end to end, through pytest itself, on a null backend.

Each test writes a test file and a ``conftest.py`` that hands the plugin the null backend
(tests/unit/null_backend.py) through the ``pytest_reprolab_backend`` hook, scripts the
attempts' outcomes, and runs pytest in a subprocess: markers, the repro loop, modes, the
host pool, verdicts, the lab hooks and the results file are the real ones.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent

CONFTEST = """
import json
from pathlib import Path

from null_backend import NullBackend

SEEN = Path(__file__).parent / "hooks.jsonl"


def pytest_reprolab_backend(config, uri):
    return NullBackend(uri, Path(config.getoption("reprolab_artifacts")))


def _log(**row):
    with SEEN.open("a") as sink:
        sink.write(json.dumps(row) + "\\n")


def pytest_reprolab_attempt_finished(item, attempt):
    _log(hook="attempt", test=item.name, index=attempt.index, outcome=str(attempt.outcome),
         failure=attempt.failure.family if attempt.failure else None)


def pytest_reprolab_crash_detected(item, report, vmcore, attempt):
    _log(hook="crash", test=item.name, index=attempt.index, title=attempt.title)
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str,
         script: dict[str, list[str]], *args: str, inprocess: bool = False
         ) -> tuple[pytest.RunResult, list[dict]]:
    pytester.makepyfile(null_backend=(HERE / "null_backend.py").read_text())
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_case=textwrap.dedent(source))
    monkeypatch.setenv("NULL_SCRIPT", json.dumps(script))
    art = pytester.path / "art"
    run = pytester.runpytest_inprocess if inprocess else pytester.runpytest_subprocess
    res = run(f"--reprolab-artifacts={art}", "-p", "no:cacheprovider", *args)
    seen = pytester.path / "hooks.jsonl"
    rows = [json.loads(line) for line in seen.read_text().splitlines()] if seen.exists() else []
    return res, rows


def _case(mode: str, attempts: int = 1, until: str = "all", body: str = "pass") -> str:
    return f"""
        import pytest

        @pytest.mark.reprolab(expect={{"kind": "soft-lockup"}}, mode={mode!r},
                              attempts={attempts}, until={until!r})
        def test_x(guest):
            {body}
    """


def test_reproduce_mode_passes_on_a_hit_and_hooks_see_every_attempt(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    res, rows = _run(pytester, monkeypatch, _case("reproduce", attempts=3),
                     {"*": ["not-reproduced", "reproduced", "not-reproduced"]})
    res.assert_outcomes(passed=1)
    assert [(r["hook"], r["index"]) for r in rows] == [
        ("attempt", 1), ("crash", 2), ("attempt", 2), ("attempt", 3)]
    res.stdout.fnmatch_lines(["*reproduced*1/3*[[]test_case.py::test_x[]]*"])


def test_reproduce_mode_first_hit_stops_the_loop(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    res, rows = _run(pytester, monkeypatch, _case("reproduce", attempts=5, until="first-hit"),
                     {"*": ["reproduced"]})
    res.assert_outcomes(passed=1)
    assert [r["index"] for r in rows if r["hook"] == "attempt"] == [1]


def test_reproduce_mode_fails_when_nothing_reproduces(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    res, _ = _run(pytester, monkeypatch, _case("reproduce", attempts=2),
                  {"*": ["not-reproduced"]})
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*not reproduced in 2 attempt(s)*expected kind='soft-lockup'*"])


def test_regression_mode_fails_on_a_hit_and_passes_without(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    res, _ = _run(pytester, monkeypatch, _case("regression", attempts=2),
                  {"*": ["not-reproduced", "reproduced"]})
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*regression: reproduced: watchdog: BUG: soft lockup*attempt 2*"])


def test_regression_mode_passes_when_the_kernel_survives(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    res, _ = _run(pytester, monkeypatch, _case("regression", attempts=2),
                  {"*": ["not-reproduced"]})
    res.assert_outcomes(passed=1)


def test_regression_mode_keeps_the_body_failure(pytester: pytest.Pytester,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    res, _ = _run(pytester, monkeypatch,
                  _case("regression", body="assert guest.sh('true') == 'x', 'counter is 3'"),
                  {"*": ["not-reproduced"]})
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*AssertionError: counter is 3*"])


@pytest.mark.parametrize("mode", ["regression", "reproduce"])
def test_infrastructure_errors_are_never_a_verdict(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   mode: str) -> None:
    res, rows = _run(pytester, monkeypatch, _case(mode, attempts=2), {"*": ["infra"]})
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*infrastructure error, no kernel verdict: qemu exited under*"])
    assert {r["failure"] for r in rows} == {"infrastructure"}
    # The first loss is run again; that one lost too, the harness is broken: no more.
    res.stdout.fnmatch_lines(["infra-error*0/3*"])


@pytest.mark.parametrize("mode", ["regression", "reproduce"])
def test_an_attempt_lost_to_the_harness_is_run_again(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     mode: str) -> None:
    """QEMU died under attempt 1 (once seen as a TCG segfault in CI): it is run again as
    attempt 2, which decides the case; attempt 1 stays on record."""
    word = "reproduced" if mode == "reproduce" else "clean"
    res, rows = _run(pytester, monkeypatch, _case(mode, attempts=1),
                     {"*": ["infra", word]})
    res.assert_outcomes(passed=1)
    assert [r["failure"] for r in rows if r["hook"] == "attempt"] == ["infrastructure", None]


def test_pool_takes_a_sick_host_out_and_reruns_the_case_elsewhere(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    sick = "test:///default?sick=1;guests=1;name=sick"
    well = "test:///default?well=1;guests=1;name=well"
    # The pool starts at host (pid % hosts): in process, put the sick host there.
    hosts = [sick, well] if os.getpid() % 2 == 0 else [well, sick]
    res, rows = _run(pytester, monkeypatch, _case("reproduce"),
                     {"test:///default?sick=1": ["host"], "test:///default?well=1": ["reproduced"]},
                     f"--reprolab-hosts={','.join(hosts)}", inprocess=True)
    res.assert_outcomes(passed=1)
    assert [r["failure"] for r in rows if r["hook"] == "attempt"] == ["host", None]
    res.stdout.fnmatch_lines([
        "reproduced*1/1*on test:///default?well=1*",
        "host sick*UNHEALTHY: host test:///default?sick=1: disk full*",
    ])


def test_an_infra_error_that_is_not_the_hosts_keeps_the_host(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    only = "test:///default?only=1"
    res, _ = _run(pytester, monkeypatch, _case("reproduce"), {only: ["infra"]},
                  f"--reprolab-hosts={only};guests=1;name=only")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["host only*healthy*"])


def test_the_plugin_is_inert_without_the_marker(pytester: pytest.Pytester) -> None:
    """A plain test in an environment where reprolab is installed loads none of its
    machinery: no libvirt, no pexpect, no SSH, no run package."""
    pytester.makepyfile(test_plain="""
        import sys

        def test_plain():
            heavy = [m for m in ("libvirt", "pexpect", "paramiko", "reprolab.run",
                                 "reprolab.run.session", "reprolab.case") if m in sys.modules]
            assert heavy == []
            assert "reprolab.pytest_plugin" in sys.modules  # loaded, yet inert
    """)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    assert "reprolab verdicts" not in res.stdout.str()
