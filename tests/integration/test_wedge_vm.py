"""Every vCPU wedged on purpose: the attempt still ends with a kernel verdict and stacks.

LKDTM HARDLOCKUP spins with interrupts off forever. Run on each of the guest's CPUs at
once (waiters pinned with taskset, released together), no timer runs anywhere: no lockup
detector can report (``nmi_watchdog=0`` also keeps the buddy detector from catching a CPU
that wedged a moment before the last, which would make the test depend on timing). The
console goes silent; the harness must notice, inject an NMI, dump, and read every CPU's
stack from the vmcore.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from reprolab.case import CaseSpec
from reprolab.guest.handle import Guest
from reprolab.guest.inflight import GuestStopped
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.resolve import resolve_kernel
from reprolab.kernel.spec import parse_kernel_spec
from reprolab.run.attempt import AttemptResult
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome
from reprolab.scenario.lkdtm import DIRECT, all_cpu_wedge

SOURCE = "linux-source-6.12"
SMALL = f"build:{SOURCE}"
#: Every vCPU of the guest is wedged on purpose, so no witness CPU is needed: two keep it cheap.
VCPUS = 2
TARBALL = Path(f"/usr/src/{SOURCE}.tar.xz")
WEDGE = all_cpu_wedge(VCPUS)

pytest_plugins = ["pytester"]

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(not TARBALL.exists(),
                       reason=f"{TARBALL} missing (apt-get install {SOURCE})"),
]


@pytest.fixture(scope="module")
def small() -> KernelArtifacts:
    return resolve_kernel(parse_kernel_spec(SMALL))


def _one_attempt(case: CaseSpec, body: Callable[[Guest], None], tmp_path: Path
                 ) -> tuple[AttemptResult, BaseException | None]:
    session = Session(uri="qemu:///system", artifacts=tmp_path / "artifacts")
    try:
        return session.run_attempt(case, 1, body)
    finally:
        session.close()


def test_silent_all_cpu_wedge_ends_with_every_cpu_stack(small: KernelArtifacts,
                                                        tmp_path: Path) -> None:
    """The guest call in flight ends with the guest's stop (not its 600 s deadline, not an
    SSH error); the verdict is the kernel's; the expected frame is found in the vmcore,
    since ``loglevel=1`` keeps every stack off the console (only the panic line shows)."""
    case = CaseSpec.from_marker("it::wedge::silent", {
        "kernel": SMALL,
        "guest": {"vcpus": VCPUS, "memory": "512M", "image": "tools"},
        "cmdline": {"nmi_watchdog": 0, "loglevel": 1},
        "silence_timeout": 30,
        "mode": "reproduce",
        "expect": {"in_stack": "lkdtm_HARDLOCKUP"},
    })
    stopped: list[BaseException] = []

    def body(guest: Guest) -> None:
        assert guest.sh("nproc").strip() == str(VCPUS)
        try:
            guest.sh(WEDGE, timeout=600)
        except GuestStopped as exc:
            stopped.append(exc)
            raise

    session = Session(uri="qemu:///system", artifacts=tmp_path / "artifacts")
    try:
        session.check_expectation(case)
        result, err = session.run_attempt(case, 1, body)
    finally:
        session.close()
    assert stopped, f"the in-flight call did not end on the guest's stop: {err!r}"
    assert "no console output" in str(stopped[0])
    kinds = [e.kind for e in result.events]
    assert kinds[:2] == ["no-output", "nmi-injected"], kinds
    assert result.outcome is Outcome.REPRODUCED, result
    assert result.matched_in is not None and result.matched_in.endswith(" in vmcore"), result
    assert result.dossier is not None
    dossier = json.loads(result.dossier.read_text())
    assert dossier["debug_info"] is True
    stacks = {c["cpu"]: c["stack"] for c in dossier["cpus"]}
    assert sorted(stacks) == list(range(VCPUS))
    for cpu, stack in stacks.items():
        assert any(f.startswith("lkdtm_HARDLOCKUP") for f in stack), (cpu, stack)
    assert dossier["expectation"]["matched_in"] == result.matched_in
    saved = json.loads((result.directory / "result.json").read_text())
    assert saved["matched_in"] == result.matched_in


def test_regression_case_fails_on_a_hang(small: KernelArtifacts, pytester: pytest.Pytester
                                          ) -> None:
    """A regression suite on a kernel that wedges must fail, naming the hang."""
    pytester.makepyfile(test_wedge=textwrap.dedent(f"""
        import pytest

        @pytest.mark.reprolab(
            kernel={SMALL!r},
            guest={{"vcpus": {VCPUS}, "memory": "512M", "image": "minimal"}},
            cmdline={{"nmi_watchdog": 0}},
            silence_timeout=20,
            dump=None,
            mode="regression",
            expect={{"kind": "hard-lockup"}},
        )
        def test_wedge(guest):
            guest.console.send({WEDGE!r})
            guest.wait(300)
    """))
    art = pytester.path / "art"
    res = pytester.runpytest_subprocess(f"--reprolab-artifacts={art}", "-p", "no:cacheprovider")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*regression: hang: no progress for * s*"])
    result = json.loads(next(art.rglob("result.json")).read_text())
    assert result["outcome"] == "hang"
    assert [e["kind"] for e in result["events"]][:2] == ["no-output", "nmi-injected"]


def test_silent_stack_overflow_is_titled_from_the_vmcore_log(small: KernelArtifacts,
                                                             tmp_path: Path) -> None:
    """LKDTM EXHAUST_STACK dies in the double-fault handler: the console may print nothing
    before pvpanic pauses the guest, but the log in the dump names the guard page hit."""
    case = CaseSpec.from_marker("it::wedge::exhaust-stack", {
        "kernel": SMALL,
        "guest": {"vcpus": 1, "memory": "512M", "image": "minimal"},
        "mode": "reproduce",
        "expect": {"title": "BUG: stack guard page was hit in .*"},
    })

    def body(guest: Guest) -> None:
        guest.console.send("mountpoint -q /sys/kernel/debug || mount -t debugfs none "
                           f"/sys/kernel/debug; echo EXHAUST_STACK > {DIRECT}")
        guest.wait(240)

    result, err = _one_attempt(case, body, tmp_path)
    assert err is None, err
    assert result.outcome is Outcome.REPRODUCED, result
    assert result.kind == "bug", result


def _probed_wedge(name: str, then: Callable[[Guest], object], tmp_path: Path
                  ) -> AttemptResult:
    """Every CPU wedged in the background, then ``then``. The silence timeout is longer than
    the probe's deadline, so only a probe can call the hang; asserts what both cases share:
    a HANG whose first events are the probe's finding and the NMI."""
    case = CaseSpec.from_marker(f"it::wedge::{name}", {
        "kernel": SMALL,
        "guest": {"vcpus": VCPUS, "memory": "512M", "image": "tools"},
        "cmdline": {"nmi_watchdog": 0},
        "silence_timeout": 300,
        "dump": None,
        "mode": "regression",
        "expect": {"kind": "hard-lockup"},
    })

    def body(guest: Guest) -> None:
        guest.sh(f"setsid sh -c {shlex.quote(WEDGE)} </dev/null >/dev/null 2>&1 &")
        guest.wait(5)  # the waiters are released together a moment later
        then(guest)

    result, err = _one_attempt(case, body, tmp_path)
    assert err is None, err
    kinds = [e.kind for e in result.events]
    assert kinds[:2] == ["unresponsive", "nmi-injected"], kinds
    assert result.outcome is Outcome.HANG, result
    return result


def test_wedge_after_the_body_returned_is_a_hang(small: KernelArtifacts, tmp_path: Path
                                                 ) -> None:
    """The body starts the wedge in the background and returns at once, long before the
    silence timeout: without the end-of-attempt liveness probe the attempt would end "not
    reproduced" and a regression suite would pass on a wedged kernel."""
    result = _probed_wedge("after-body", lambda guest: None, tmp_path)
    assert any("liveness probe" in n for n in result.notes), result.notes


def test_wedge_under_a_body_command_is_a_hang(small: KernelArtifacts, tmp_path: Path
                                             ) -> None:
    """The body waits on a command the wedged guest never answers: a hang with its capture,
    not an infrastructure error (it was one, and a CFS storm that stalled a guest under TCG
    ended "infra-error" with no stack). The fresh probe that decides it gets no answer."""
    result = _probed_wedge("under-command", lambda guest: guest.sh("uname -r", timeout=10),
                           tmp_path)
    assert "after a command of the test body got none" in result.events[0].line
    assert any("stopped by an unresponsive guest: guest command 'uname -r'" in n
               for n in result.notes), result.notes


def test_live_guest_passes_the_liveness_probe(small: KernelArtifacts, tmp_path: Path) -> None:
    """The same case whose body leaves the guest healthy ends "not reproduced": the probe
    answers and adds no event."""
    case = CaseSpec.from_marker("it::wedge::healthy", {
        "kernel": SMALL,
        "guest": {"vcpus": VCPUS, "memory": "512M", "image": "tools"},
        "dump": None,
        "mode": "regression",
        "expect": {"kind": "hard-lockup"},
    })

    def body(guest: Guest) -> None:
        guest.sh("sleep 1 &")

    result, err = _one_attempt(case, body, tmp_path)
    assert err is None, err
    assert result.outcome is Outcome.NOT_REPRODUCED, result
    assert not result.events, result.events
