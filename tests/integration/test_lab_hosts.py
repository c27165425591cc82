"""Lab scale-out on this machine: two hosts (local and loopback qemu+ssh), xdist workers.

The loopback sshd and root's key come from the ansible proof (scripts/ansible-proof.sh),
which provisions this machine as a lab host; the test runs it first when sshd is missing.
"""

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from vmtools import our_domains

from reprolab.kernel.artifacts import stock_release

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]
SSH_URI = "qemu+ssh://root@127.0.0.1/system"

CASES = '''
import pytest

@pytest.mark.reprolab(guest={"vcpus": 1, "memory": "384M", "image": "minimal"},
                      expect={"title": "kernel panic: sysrq triggered crash"}, mode="reproduce")
@pytest.mark.parametrize("n", [1, 2])
def test_sysrq(guest, n):
    guest.console.send("echo c > /proc/sysrq-trigger")
    guest.wait(60)
'''


@pytest.fixture(scope="module")
def loopback_lab_host() -> str:
    probe = ["virsh", "-c", SSH_URI, "version"]
    env = {"LIBVIRT_SSH_OPTS": "-o BatchMode=yes"}
    if subprocess.run(probe, capture_output=True, check=False, env=env).returncode != 0:
        subprocess.run(["bash", str(REPO / "scripts" / "ansible-proof.sh")], check=True,
                       capture_output=True, timeout=1200)
    return SSH_URI


def _pytest(tmp_path: Path, *args: str, env: dict[str, str] | None = None
            ) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    (tmp_path / "test_cases.py").write_text(CASES)
    art = tmp_path / "art"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_cases.py"), "-p",
         "no:cacheprovider", f"--rootdir={tmp_path}", f"--reprolab-artifacts={art}",
         f"--junitxml={tmp_path / 'junit.xml'}", "-o", "junit_family=xunit1", *args],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=900,
        env={**os.environ, **(env or {})},
    )
    rows = [json.loads(line) for line in (art / "results.jsonl").read_text().splitlines()]
    return done, rows


def test_two_workers_share_two_hosts_at_once(tmp_path: Path, loopback_lab_host: str) -> None:
    hosts = f"qemu:///system;guests=1,{loopback_lab_host};guests=1"
    done, rows = _pytest(tmp_path, "-n", "2", f"--reprolab-hosts={hosts}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert [r["verdict"] for r in rows] == ["reproduced", "reproduced"]
    assert {r["host"] for r in rows} == {"qemu:///system", loopback_lab_host}
    attempts = [json.loads(next(Path(r["artifacts"]).glob("attempt-*/result.json")).read_text())
                for r in rows]
    spans = []
    for a in attempts:
        start = datetime.fromisoformat(a["started_at"]).timestamp()
        spans.append((start, start + a["duration"]))
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"not concurrent: {spans}"
    names = {etree.parse(str(Path(a["directory"]) / "domain.xml")).findtext("name")
             for a in attempts}
    assert len(names) == 2 and not names & set(our_domains())
    assert all(Path(r["vmcore"]).stat().st_size > 0 for r in rows)
    cases = list(etree.parse(str(tmp_path / "junit.xml")).iter("testcase"))
    assert len(cases) == 2
    assert "host local" in done.stdout and "healthy" in done.stdout


def test_unreachable_host_moves_work_and_is_reported(tmp_path: Path) -> None:
    dead = "qemu+ssh://root@127.0.0.1:1/system"  # nothing listens on port 1
    hosts = f"{dead};guests=1;name=deadhost,qemu:///system;guests=1"
    done, rows = _pytest(tmp_path, "-k", "1", f"--reprolab-hosts={hosts}")
    assert done.returncode == 0, done.stdout[-3000:]
    assert [(r["verdict"], r["host"]) for r in rows] == [("reproduced", "qemu:///system")]
    assert "deadhost" in done.stdout and "UNHEALTHY" in done.stdout
    assert "cannot connect to libvirt at qemu+ssh://root@127.0.0.1:1/system" in done.stdout


def test_guest_ssh_through_a_lab_host_gateway(tmp_path: Path, loopback_lab_host: str) -> None:
    """On a remote lab host the guest's port is forwarded on *its* loopback: reprolab
    reaches it through the host's sshd (direct-tcpip). Loopback stands in for the host."""
    from vmtools import make_case

    from reprolab.run.session import Session
    from reprolab.ssh import SshChannel

    seen: dict[str, str] = {}

    def body(guest: Any) -> None:
        assert guest.ssh is not None
        via = SshChannel("127.0.0.1", guest.ssh.port, guest.ssh.key, guest.ssh.host_key,
                         gateway=("127.0.0.1", 22, "root"))
        try:
            seen["out"] = via.run("uname -r", check=True).stdout
        finally:
            via.close()

    session = Session(uri=loopback_lab_host, artifacts=tmp_path)
    try:
        case = make_case(guest={"vcpus": 1, "memory": "512M", "image": "tools"}, dump=None)
        result, err = session.run_attempt(case, 1, body)
    finally:
        session.close()
    assert err is None, err
    assert seen["out"].strip() == stock_release(), result


def test_full_disk_host_is_an_infrastructure_error_naming_it(tmp_path: Path) -> None:
    hosts = "qemu:///system;guests=1;name=fullhost"
    # Demand more free space than any disk has: the host counts as full.
    done, rows = _pytest(tmp_path, "-k", "1", f"--reprolab-hosts={hosts}",
                         env={"REPROLAB_MIN_FREE_GIB": "1000000"})
    assert done.returncode == 1, done.stdout[-3000:]
    assert "infrastructure error, no kernel verdict" in done.stdout
    assert "host localhost: disk full for reproductions" in done.stdout
    assert "fullhost" in done.stdout and "UNHEALTHY" in done.stdout
    assert [r["verdict"] for r in rows] == ["infra-error"]  # not a kernel verdict
