"""The ansible roles applied for real to this machine, twice, by scripts/ansible-proof.sh.

The script is the proof CI relies on (lint clean, first application without failure, second
application without change, qemu+ssh to 127.0.0.1 answering); this test runs it and reads
its report line by line, so a regression names the step that broke.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reprolab.proc import run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ansible-proof.sh"
RECAP = re.compile(r"^ansible-proof: apply (\d): (.*) in ([\d.]+) s$")


def _recap(fields: str) -> dict[str, int]:
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", fields)}


@pytest.fixture(scope="module")
def proof(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, list[str], str]:
    if os.geteuid() != 0:
        pytest.skip("the roles install packages and start daemons: needs root")
    logs = tmp_path_factory.mktemp("ansible-proof")
    done = run(
        ["bash", str(SCRIPT)],
        env={"REPROLAB_PROOF_LOGS": str(logs)},
        timeout=1800,
        check=False,
    )
    return done.rc, done.stdout.splitlines(), done.stderr


def test_proof_script_succeeds(proof: tuple[int, list[str], str]) -> None:
    rc, lines, stderr = proof
    assert rc == 0, "\n".join([*lines, stderr])
    assert lines[-1] == "ansible-proof: ok"


def test_ansible_lint_is_clean(proof: tuple[int, list[str], str]) -> None:
    _, lines, _ = proof
    assert any(line.startswith("ansible-proof: lint: clean") for line in lines), lines


def test_site_applies_then_changes_nothing(proof: tuple[int, list[str], str]) -> None:
    _, lines, _ = proof
    recaps = {}
    for line in lines:
        match = RECAP.match(line)
        if match:
            recaps[int(match.group(1))] = _recap(match.group(2))
    assert set(recaps) == {1, 2}, lines
    first, second = recaps[1], recaps[2]
    assert first["failed"] == 0 and first["unreachable"] == 0
    assert second["failed"] == 0 and second["unreachable"] == 0
    assert second["changed"] == 0
    assert second["ok"] > 0


def test_qemu_ssh_loopback_answers(proof: tuple[int, list[str], str]) -> None:
    _, lines, _ = proof
    line = next(x for x in lines if x.startswith("ansible-proof: qemu+ssh://root@127.0.0.1"))
    assert "Running hypervisor: QEMU" in line


def test_authorized_keys_are_restricted(proof: tuple[int, list[str], str]) -> None:
    """The qemu+ssh account is root-equivalent: its keys carry from= and restrict options."""
    rc, _, _ = proof
    assert rc == 0
    lines = [line for line in Path("/root/.ssh/authorized_keys").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines
    for line in lines:
        assert line.startswith('from="127.0.0.1,::1",restrict,port-forwarding,'
                               'permitopen="127.0.0.1:*" '), line
