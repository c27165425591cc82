"""Marker validation at collection (issue 16 item 4): every bad key of every bad marker is
reported, one line each naming the test, the key, the value and what is allowed, with no
INTERNALERROR traceback and no guest booted."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

BAD = '''
import pytest


@pytest.mark.reprolab(expect={"kind": "panic"}, boot_timeout="soon")
def test_soon(guest):
    pass


@pytest.mark.reprolab(expect="soft-lockup")
def test_expect_string(guest):
    pass


@pytest.mark.reprolab(expect={"kind": "panic"},
                      guest={"watchdog": {"acton": "pause", "action": "explode"}})
def test_watchdog(guest):
    pass


@pytest.mark.reprolab(expect={"kind": "softlockup", "events": ["rt-throttle"]},
                      kernel="build:linux-source-6.12+cofnig=defconfig",
                      guest={"image": "no-such-image", "vcpus": 0})
def test_many(guest):
    pass


@pytest.mark.reprolab(expect={"kind": "panic"}, kernel="stock", attempts=2)
def test_good(guest):
    pass
'''


def _run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_cases=textwrap.dedent(source))
    # The artifacts root and libvirt are never touched: collection fails first.
    # (the plugin is loaded through its pytest11 entry point, as for users)
    return pytester.runpytest_subprocess("--collect-only", "-p", "no:cacheprovider")


def test_all_bad_keys_of_all_markers_one_line_each(pytester: pytest.Pytester) -> None:
    result = _run(pytester, BAD)
    out = result.stdout.str() + "\n" + result.stderr.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line.removeprefix("ERROR: ") for line in out.splitlines()
             if line.removeprefix("ERROR: ").startswith("test case ")]
    expected = [
        ("test_soon", "boot_timeout='soon'", "positive number of seconds"),
        ("test_expect_string", "expect='soft-lockup'", "must be a mapping"),
        ("test_watchdog", "guest.watchdog.acton='pause'", "unknown watchdog key"),
        ("test_watchdog", "guest.watchdog.action='explode'", "pause, reset"),
        ("test_many", "expect.kind='softlockup'", "soft-lockup"),
        ("test_many", "expect.events='rt-throttle'", "rt-throttling"),
        ("test_many", "kernel='build:linux-source-6.12+cofnig=defconfig'", "unknown key"),
        ("test_many", "guest.image='no-such-image'", "known: minimal"),
        ("test_many", "guest.vcpus=0", "1 to 64"),
    ]
    for test, key, allowed in expected:
        hits = [line for line in lines if f"::{test}: {key}: " in line and allowed in line]
        assert len(hits) == 1, (test, key, lines)
    assert len(lines) == len(expected), lines
    assert not any("test_good" in line for line in lines)


def test_good_markers_collect(pytester: pytest.Pytester) -> None:
    result = _run(pytester, '''
        import pytest

        @pytest.mark.reprolab(expect={"kind": "soft-lockup", "events": ["watchdog-fire"]},
                              guest={"vcpus": 3, "watchdog": {"action": "pause"}},
                              boot_timeout=60, silence_timeout=30.5, hang_budget=20)
        def test_fine(guest):
            pass
    ''')
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
