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
    before = set(our_domains())
    done = subprocess.run(
        [sys.executable, "-m", "reprolab.cli", "shell", "--artifacts", str(tmp_path),
         "--exec", "uname -r; echo to-stderr >&2; exit 3"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=600,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert stock_release() in done.stdout.splitlines()
    console = (tmp_path / "shell" / "attempt-001" / "console.log").read_text(errors="replace")
    assert "Linux version" in console
    assert set(our_domains()) <= before  # the guest was destroyed on the way out
