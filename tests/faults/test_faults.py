"""Faults injected into real guests, at boot, in the scenario and during the dump.

Each test checks the same four things: the attempt ends as an infrastructure error (or
keeps the kernel verdict it had already reached), every console byte written before the
fault is in the artifacts, nothing is left behind (domain, QEMU, scratch), and the next
run starts clean. Guests are the stock kernel on the busybox image with 256 MiB, so dumps
and boots stay short; the larger matrix is bench/bench_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import daemons
import pytest
from filelock import FileLock
from lxml import etree

from reprolab.case import CaseSpec
from reprolab.errors import Family
from reprolab.guest.handle import Guest
from reprolab.pytest_plugin import _host_trouble
from reprolab.run.record import CaseResult
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]
PANIC_TITLE = "kernel panic: sysrq triggered crash"


def make_case(name: str = "faults::case", **marker: object) -> CaseSpec:
    marker.setdefault("expect", {"title": PANIC_TITLE})
    marker.setdefault("guest", {"vcpus": 1, "memory": "256M", "image": "minimal"})
    # Faults "during the dump" land while the raw ELF dump is written: a compressed one of
    # this guest takes well under a second, too short a window to inject into.
    marker.setdefault("dump", "elf")
    return CaseSpec.from_marker(name, marker)


def domain_of(attempt: Path) -> str:
    return str(etree.parse(str(attempt / "domain.xml")).getroot().findtext("name"))


class Injector:
    """Fires ``action`` once ``ready`` holds, from a thread, snapshotting console.log then."""

    def __init__(self, ready: Callable[[], Path | None], action: Callable[[Path], None]
                 ) -> None:
        self.ready, self.action = ready, action
        self.fired_at: Path | None = None
        self.console_then = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            attempt = self.ready()
            if attempt is not None:
                log = attempt / "console.log"
                self.console_then = log.read_bytes() if log.exists() else b""
                self.action(attempt)
                self.fired_at = attempt
                return
            time.sleep(0.01)

    def __enter__(self) -> Injector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def attempt_with(root: Path, file: str, min_size: int = 1) -> Callable[[], Path | None]:
    def ready() -> Path | None:
        for path in root.glob(f"*/attempt-*/{file}"):
            try:
                if path.stat().st_size >= min_size:
                    return path.parent
            except OSError:
                continue
        return None
    return ready


def assert_clean(session: Session, attempt: Path, console_then: bytes = b"", *,
                 record: dict[str, object]) -> None:
    """The next run starts clean and nothing of this one is left; no console byte lost."""
    name = domain_of(attempt)
    session.close()  # a session that lost libvirtd reconnects and reaps its own guests
    found = [f"scratch {session.run_dir}"] if session.run_dir.exists() else []
    nxt = Session(uri=daemons.URI, artifacts=attempt.parent.parent)
    try:
        nxt.conn  # noqa: B018 - the next run's start: reaps what a dead run left
        deadline = time.monotonic() + 30
        while daemons.leaks([name]) and time.monotonic() < deadline:
            time.sleep(0.5)
        found += daemons.leaks([name])
    finally:
        nxt.close()
    # console.raw: the bytes as read (console.log is rewritten as text after the attempt).
    raw = attempt / "console.raw"
    if not (raw if raw.exists() else attempt / "console.log").read_bytes().startswith(
            console_then):
        found.append("console bytes written before the fault are missing")
    lock = attempt.parent.parent / "results.jsonl.lock"
    if lock.exists():
        try:
            with FileLock(str(lock), timeout=0):
                pass
        except TimeoutError:
            found.append(f"lock held: {lock}")
    record["leaks"] = found
    assert found == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A tmpfs of a given size, mounted for the test and unmounted whatever happens."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


# -- the artifacts disk full -----------------------------------------------------------------
def test_full_artifacts_disk_is_refused_before_the_guest_boots(
        small_fs: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
        record: dict[str, object]) -> None:
    monkeypatch.setenv("REPROLAB_MIN_FREE_GIB", "0")
    art = small_fs("16m")
    session = Session(uri=daemons.URI, artifacts=art)
    try:
        result, _ = session.run_attempt(make_case(), 1, lambda g: None)
    finally:
        session.close()
    assert result.outcome is Outcome.INFRA_ERROR
    assert f"disk full for reproductions at {art}" in (result.error or "")
    # Typed as the host's: a lab pool takes the host out, by family, not by these words.
    assert result.failure is not None and result.failure.family is Family.HOST
    assert not (result.directory / "domain.xml").exists()  # no guest was started
    record["classified"] = True
    record["leaks"] = daemons.leaks([])
    assert record["leaks"] == []


def test_full_disk_during_the_dump_keeps_the_verdict(
        small_fs: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch,
        record: dict[str, object]) -> None:
    monkeypatch.setenv("REPROLAB_MIN_FREE_GIB", "0")
    art = small_fs("300m")
    session = Session(uri=daemons.URI, artifacts=art)

    def body(guest: Guest) -> None:
        # Fill the disk behind the guest's back, leaving room for logs, not for a vmcore.
        with (art / "filler").open("wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.statvfs(art).f_bavail
                               * os.statvfs(art).f_frsize - (3 << 20))
        guest.console.send("echo c > /proc/sysrq-trigger")
        guest.wait(60)

    result, err = session.run_attempt(make_case(), 1, body)
    assert err is None
    why = f"{result.outcome} {result.title!r} {result.dump_error!r} {result.notes}"
    assert result.outcome is Outcome.REPRODUCED and result.title == PANIC_TITLE, why
    assert result.dump_failed and result.vmcore is None, why
    assert "No space left" in (result.dump_error or "") or "truncated" in (
        result.dump_error or ""), why
    assert any(e.fatal for e in result.events)
    assert (result.directory / "crash-report.txt").exists()
    assert b"sysrq triggered crash" in (result.directory / "console.log").read_bytes()
    saved = json.loads((result.directory / "result.json").read_text())
    assert saved["dump_error"] and saved["title"] == PANIC_TITLE
    record["classified"] = True
    (art / "filler").unlink()
    assert_clean(session, result.directory, record=record)


# -- QEMU killed -----------------------------------------------------------------------------
def test_qemu_killed_during_boot_is_infrastructure(session: Session,
                                                   record: dict[str, object]) -> None:
    injector = Injector(attempt_with(session.artifacts, "console.log", 2000),
                        lambda a: daemons.kill_qemu(domain_of(a)) or None)
    with injector:
        result, _ = session.run_attempt(make_case(), 1, lambda g: None)
    assert injector.fired_at == result.directory
    assert result.outcome is Outcome.INFRA_ERROR and result.error_type == "GuestDied"
    record["classified"] = True
    assert_clean(session, result.directory, injector.console_then, record=record)


def test_qemu_killed_during_the_dump_keeps_the_verdict(session: Session,
                                                       record: dict[str, object]) -> None:
    injector = Injector(attempt_with(session.artifacts, "vmcore.elf"),
                        lambda a: daemons.kill_qemu(domain_of(a)) or None)

    def body(guest: Guest) -> None:
        guest.console.send("echo c > /proc/sysrq-trigger")
        guest.wait(60)

    with injector:
        result, _ = session.run_attempt(make_case(), 1, body)
    assert injector.fired_at == result.directory
    assert result.outcome is Outcome.REPRODUCED and result.title == PANIC_TITLE
    assert result.dump_failed and result.vmcore is None
    assert not (result.directory / "vmcore.elf").exists()  # no partial dump passed off
    record["classified"] = True
    assert_clean(session, result.directory, injector.console_then, record=record)


# -- libvirtd and virtlogd -------------------------------------------------------------------
#: CI stops libvirtd mid-scenario; bench/bench_faults.py also at boot and during the dump.
LIBVIRTD_PHASES = ["boot", "scenario", "dump"] if os.environ.get("FAULTS_FULL") else [
    "scenario"]


@pytest.mark.parametrize("phase", LIBVIRTD_PHASES)
def test_libvirtd_stopped_is_libvirt_going_away(
        session: Session, record: dict[str, object], phase: str) -> None:
    ready = {"boot": attempt_with(session.artifacts, "console.log", 2000),
             "scenario": lambda: None,
             "dump": attempt_with(session.artifacts, "vmcore.elf")}[phase]
    injector = Injector(ready, lambda a: daemons.stop("libvirtd"))

    def body(guest: Guest) -> None:
        if phase == "scenario":
            guest.wait(1)
            daemons.stop("libvirtd")
            guest.wait(30)
        else:
            guest.console.send("echo c > /proc/sysrq-trigger")
            guest.wait(60)

    case = make_case()
    try:
        with injector:
            result, err = session.run_attempt(case, 1, body)
    finally:
        daemons.ensure_running()
    assert err is None
    if phase == "dump":
        # The console gave the verdict before libvirtd went; only the vmcore is lost.
        assert injector.fired_at == result.directory
        assert result.outcome is Outcome.REPRODUCED and result.dump_failed, result
    else:
        assert result.outcome is Outcome.INFRA_ERROR
        assert result.error_type == "LibvirtUnavailable", result.error
        # A lab pool takes such a host out instead of retrying the case on it.
        assert _host_trouble(CaseResult(case, (result,))) is not None
    record["classified"] = True
    assert_clean(session, result.directory, injector.console_then, record=record)


def test_virtlogd_killed_under_a_console_flood_keeps_every_byte(
        session: Session, record: dict[str, object]) -> None:
    # Lines numbered so a lost byte shows; virtlogd dies between the two floods. (Floods
    # past virtlogd's 2 MiB rotation take minutes under TCG: FAULTS_FLOOD_LINES in bench.)
    half = int(os.environ.get("FAULTS_FLOOD_LINES", "5000"))
    # Below this QEMU 7.2 drops console bytes once virtlogd is gone (start-daemons.sh).
    from reprolab.doctor import console_buffer_check
    buffer = console_buffer_check()
    assert buffer.status == "ok", f"{buffer.detail} (scripts/start-daemons.sh sets it)"

    def flood(first: int, last: int, tag: int) -> None:
        since = guest_console.position
        guest_console.send(f"seq {first} {last}; echo FLOOD$((40+{tag}))")
        guest_console.wait_for(f"FLOOD{40 + tag}", 900, since=since)

    def body(guest: Guest) -> None:
        nonlocal guest_console
        guest_console = guest.console
        flood(1, half, 2)
        daemons.stop("virtlogd", signal.SIGKILL)
        daemons.ensure_running()
        flood(half + 1, 2 * half, 3)
        guest.console.send("echo c > /proc/sysrq-trigger")
        guest.wait(60)

    guest_console: Any = None
    result, err = session.run_attempt(make_case(dump=None), 1, body)
    assert err is None
    assert result.outcome is Outcome.REPRODUCED, result  # the flood did not cost the verdict
    assert any(n.startswith("serial.log truncated") for n in result.notes), result.notes
    record["classified"] = True
    log = (result.directory / "console.log").read_bytes().replace(b"\r", b"")
    # A kernel message may land in the middle of the flood ("4357[    3.33] random: crng
    # init done"): it interleaves, it loses nothing, so it is cut out before counting.
    log = re.sub(rb"\[\s*\d+\.\d+\][^\n]*", b"", log)
    numbers = [int(x) for x in log.split(b"\n") if x.isdigit()]
    record["console_lines_lost"] = 2 * half - len(numbers)
    assert not list(session.run_dir.glob("*.serial.log*"))
    assert_clean(session, result.directory, record=record)
    assert numbers == list(range(1, 2 * half + 1))


# -- the console going silent ----------------------------------------------------------------
def test_console_silent_from_boot_is_a_boot_timeout(session: Session,
                                                    record: dict[str, object]) -> None:
    case = make_case(cmdline={"console": "tty0"}, boot_timeout=20)
    result, _ = session.run_attempt(case, 1, lambda g: None)
    assert result.outcome is Outcome.INFRA_ERROR and result.error_type == "BootTimeout"
    record["classified"] = True
    assert_clean(session, result.directory, record=record)


# -- the runner killed -----------------------------------------------------------------------
PHASES: dict[str, Callable[[Path, Path], Callable[[], Path | None]]] = {
    "boot": lambda art, marks: attempt_with(art, "console.log", 2000),
    "scenario": lambda art, marks: (lambda: attempt_with(art, "console.log")()
                                    if (marks / "scenario").exists() else None),
    "dump": lambda art, marks: attempt_with(art, "vmcore.elf"),
}


def run_runner_fault(tmp_path: Path, sig: signal.Signals, phase: str
                     ) -> tuple[int, Path | None, bytes, Path]:
    """Run fault_case.py in a pytest subprocess and send ``sig`` in ``phase``."""
    art, marks = tmp_path / "art", tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "FAULTS_MARKS": str(marks), "PYTHONPATH": str(REPO)}
    out = (tmp_path / "runner.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(Path(__file__).with_name("fault_case.py")),
         "-p", "no:cacheprovider", f"--reprolab-artifacts={art}"],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    injector = Injector(PHASES[phase](art, marks), lambda a: proc.send_signal(sig))
    try:
        with injector:
            rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, injector.fired_at, injector.console_then, art


#: CI runs two of the six (signal, phase) pairs (the dump phase is covered by the QEMU and
#: libvirtd faults); bench/bench_faults.py runs all six.
RUNNER_FAULTS = [(signal.SIGKILL, "boot"), (signal.SIGINT, "scenario")]
if os.environ.get("FAULTS_FULL"):
    RUNNER_FAULTS = [(s, p) for p in PHASES for s in (signal.SIGKILL, signal.SIGINT)]


@pytest.mark.parametrize(("sig", "phase"), RUNNER_FAULTS,
                         ids=[f"{s.name}-{p}" for s, p in RUNNER_FAULTS])
def test_runner_killed(tmp_path: Path, sig: signal.Signals, phase: str,
                       record: dict[str, object]) -> None:
    rc, attempt, console_then, art = run_runner_fault(tmp_path, sig, phase)
    output = (tmp_path / "runner.out").read_text(errors="replace")
    assert attempt is not None, f"{phase} never came: {output[-2000:]}"
    result_file = attempt / "result.json"
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
        assert not result_file.exists()  # nothing could write a verdict
    else:
        assert rc == pytest.ExitCode.INTERRUPTED, output[-2000:]
        saved = json.loads(result_file.read_text())
        assert saved["outcome"] == "infra-error" and saved["error_type"] == "Interrupted"
        row = json.loads((art / "results.jsonl").read_text().splitlines()[-1])
        assert row["verdict"] == "infra-error" and row["interrupted"] is True
    record["classified"] = True
    session = Session(uri=daemons.URI, artifacts=art)
    assert_clean(session, attempt, console_then, record=record)
