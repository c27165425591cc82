"""The core, end to end: boot the stock kernel under libvirt, watch, capture, judge."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import drgn
import pytest
from lxml import etree
from vmtools import domain_name, make_case, our_domains

from reprolab.accel import detect_accel
from reprolab.detect.events import NMI_INJECTED, NO_OUTPUT, PVPANIC
from reprolab.guest.handle import Guest
from reprolab.kernel.artifacts import stock_release
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]


def _vmcore_osrelease(path: Path) -> str:
    """Read VMCOREINFO's OSRELEASE from the dump: proof the guest published vmcoreinfo.

    drgn opens an ELF dump directly; a kdump-compressed one carries the same note uncompressed
    near its start (the dossier proves drgn reads it through the conversion)."""
    if path.suffix == ".elf":
        prog = drgn.Program()
        prog.set_core_dump(str(path))
        assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    data = path.read_bytes()[: 1 << 20]
    start = data.index(b"OSRELEASE=") + len(b"OSRELEASE=")
    return data[start : data.index(b"\n", start)].decode()


def test_sysrq_case_through_pytest_reproduces_with_vmcore(tmp_path: Path) -> None:
    art = tmp_path / "art"
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "testcases" / "test_sysrq_panic.py"),
         "-p", "no:cacheprovider", f"--reprolab-artifacts={art}", f"--junitxml={junit}"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    row = json.loads((art / "results.jsonl").read_text().splitlines()[0])
    assert row["verdict"] == "reproduced"
    assert row["title"] == "kernel panic: sysrq triggered crash"
    vmcore = Path(row["vmcore"])
    # Whatever this host offers (TCG here, KVM on a lab host with vmx/svm: the session
    # probes), the accel recorded is the one the guest ran with: the domain's own type.
    domain_type = etree.parse(str(vmcore.parent / "domain.xml")).getroot().get("type")
    assert (row["accel"], domain_type) in (("tcg", "qemu"), ("kvm", "kvm"))
    if detect_accel().accel == "tcg":  # no usable /dev/kvm: nothing but TCG can have run
        assert row["accel"] == "tcg"
    # Compressed by default: a 512 MiB guest's dump is a small fraction of its memory, and no
    # full-size ELF (the dossier's temporary conversion) is left beside it.
    assert vmcore.name == "vmcore.kdump" and 0 < vmcore.stat().st_size <= (512 << 20) // 10
    assert _vmcore_osrelease(vmcore) == stock_release()
    attempt = vmcore.parent
    assert not list(attempt.glob("*.elf"))
    dossier = json.loads((attempt / "report.json").read_text())
    assert dossier["format"] in ("kdump", "kdump-flattened")
    assert dossier["osrelease"] == stock_release() and not dossier["errors"]
    assert dossier["panic_message"] == "sysrq triggered crash"
    assert any("sysrq" in line for line in dossier["dmesg_tail"])
    console = (attempt / "console.log").read_text(errors="replace")
    assert "Kernel panic - not syncing: sysrq triggered crash" in console
    # The image's shell printed the ready marker as it started: the body's command was the
    # first thing typed, with no probe before it, and it ran.
    typed = console[console.index("REPROLAB-READY"):]
    assert "P$((6*7))" not in typed and "echo c > /proc/sysrq-trigger" in typed
    result = json.loads((attempt / "result.json").read_text())
    # libvirt's own copy of the console stays only where it differs from what was read.
    assert (attempt / "console.raw").exists()
    if (attempt / "serial.log").exists():
        assert any(n.startswith("serial.log kept: ") for n in result["notes"])
    assert result["outcome"] == "reproduced" and result["boot_seconds"] > 0
    props = {p.get("name"): p.get("value")
             for p in etree.parse(str(junit)).iter("property")}
    assert props["reprolab_verdict"] == "reproduced"
    assert props["reprolab_accel"] == row["accel"]
    assert props["reprolab_vmcore"] == str(vmcore)
    assert "reprolab verdicts" in done.stdout
    assert domain_name(attempt) not in our_domains()


def test_console_commands_and_pvpanic(session: Session) -> None:
    seen: dict[str, object] = {}

    def body(guest: Guest) -> None:
        res = guest.console.run("uname -r; echo hello >&2; false")
        seen["out"], seen["rc"] = res.stdout, res.rc
        seen["ok"] = guest.sh("cat /proc/cmdline")
        guest.console.send("echo c > /proc/sysrq-trigger")
        guest.wait(60)
        seen["pvpanic"] = guest.wait_for_event(PVPANIC, 10, stop_on_fatal=False) is not None

    # The raw form on request (marker dump="elf"): the whole guest memory, read by drgn as is.
    result, err = session.run_attempt(make_case(dump="elf"), 1, body)
    assert err is None
    assert result.vmcore is not None and result.vmcore.name == "vmcore.elf"
    assert result.vmcore.stat().st_size > 256 << 20
    assert _vmcore_osrelease(result.vmcore) == stock_release()
    assert seen["rc"] == 1 and stock_release() in str(seen["out"])
    assert "hello" in str(seen["out"])
    assert "console=ttyS0" in str(seen["ok"])
    assert seen["pvpanic"] is True
    assert result.outcome is Outcome.REPRODUCED and result.vmcore is not None
    assert domain_name(result.directory) not in our_domains()


def test_silent_guest_is_reported_as_no_output(session: Session) -> None:
    case = make_case(expect={"events": [NO_OUTPUT]}, silence_timeout=4, dump=None)
    result, err = session.run_attempt(case, 1, lambda g: g.wait(60))
    assert err is None
    assert result.outcome is Outcome.REPRODUCED
    assert next(e.kind for e in result.events if e.fatal) == NO_OUTPUT
    # The harness then made the silent kernel speak: an NMI, which it turns into a panic.
    kinds = [e.kind for e in result.events]
    assert kinds.index(NO_OUTPUT) < kinds.index(NMI_INJECTED) < kinds.index(PVPANIC), kinds


def test_boot_timeout_is_infrastructure_not_a_verdict(session: Session) -> None:
    case = make_case(boot_timeout=1)
    result, _ = session.run_attempt(case, 1, lambda g: None)
    assert result.outcome is Outcome.INFRA_ERROR
    assert "did not reach its ready marker in 1 s" in (result.error or "")
    assert (result.directory / "console.log").exists()
    assert (result.directory / "error.txt").exists()
    assert domain_name(result.directory) not in our_domains()


def test_qemu_dying_is_infrastructure_not_a_verdict(session: Session) -> None:
    def body(guest: Guest) -> None:
        pid = int(Path(f"/run/libvirt/qemu/{guest.domain.name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        guest.wait(30)

    result, err = session.run_attempt(make_case(), 1, body)
    assert err is None
    assert result.outcome is Outcome.INFRA_ERROR, result
    assert "gone" in (result.error or "") or "closed" in (result.error or "")


def test_the_test_body_failure_is_the_tests_own(session: Session) -> None:
    def body(guest: Guest) -> None:
        raise AssertionError("scenario check failed")

    result, err = session.run_attempt(make_case(), 1, body)
    assert isinstance(err, AssertionError)
    assert result.outcome is Outcome.NOT_REPRODUCED


_RUNNER = """
import sys, time
from pathlib import Path
from reprolab.run.session import Session
from reprolab.case import CaseSpec
case = CaseSpec.from_marker("it::killed", {"expect": {"kind": "panic"},
    "guest": {"vcpus": 1, "memory": "256M", "image": "minimal"}})
s = Session(artifacts=Path(sys.argv[1]))
def body(g):
    print("BOOTED", g.domain.name, flush=True)
    time.sleep(600)
s.run_attempt(case, 1, body)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_runner_leaves_no_domain(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("BOOTED"), line
    name = line.split()[1]
    assert name in our_domains()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 20
    while name in our_domains() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert name not in our_domains()
