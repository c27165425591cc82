"""`reprolab shell --exec`: one command in the guest a case would get, then nothing left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from vmtools import our_domains

from reprolab.kernel.artifacts import stock_release

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]


def test_shell_exec_prints_the_output_and_exits_with_the_status(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprolab.cli", "shell", "--artifacts", str(tmp_path),
         "--exec", "uname -r; echo to-stderr >&2; exit 3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out + err
    assert stock_release() in out.splitlines()
    console = (tmp_path / "shell" / "attempt-001" / "console.log").read_text(errors="replace")
    assert "Linux version" in console
    # The guest (named after the shell's pid) was destroyed on the way out.
    assert not [d for d in our_domains() if d.startswith(f"rl-shell-{proc.pid}-")]


def test_shell_hands_the_console_to_the_terminal_until_ctrl_bracket(tmp_path: Path) -> None:
    """Without --exec the user gets the guest's console (its socket, bridged to the
    terminal): typed commands run in the guest, Ctrl-] leaves, the guest goes."""
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "reprolab.cli", "shell", "--artifacts",
                                           str(tmp_path)], cwd=str(REPO), timeout=600)
    try:
        child.expect("Ctrl-] leaves")
        child.sendline("echo R$((6*7))L; uname -r")
        child.expect("R42L")
        child.expect(stock_release())
        child.sendcontrol("]")
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert not [d for d in our_domains() if d.startswith(f"rl-shell-{child.pid}-")]
