"""`reprolab run` ends with one line per skipped case saying what it needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reprolab.commands.run import print_skipped, skipped_cases

CASES = '''
import pytest

@pytest.mark.skipif(True, reason="needs kernel build:linux-source-6.12, not in the cache")
def test_needs_kernel():
    pass

def test_runs():
    pass

def test_skips_inside():
    pytest.skip("no VMX here: run on a KVM host with vmx and nested=1")
'''


def test_skipped_cases_come_from_the_junit_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "test_cases.py").write_text(CASES)
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-p", "no:reprolab", str(tmp_path / "test_cases.py"),
                    f"--junitxml={junit}"], check=True, capture_output=True, cwd=tmp_path)
    assert skipped_cases(junit) == [
        ("test_needs_kernel", "needs kernel build:linux-source-6.12, not in the cache"),
        ("test_skips_inside", "no VMX here: run on a KVM host with vmx and nested=1"),
    ]
    print_skipped(junit)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("skipped test_needs_kernel: needs kernel build:linux-source-6.12, "
                        "not in the cache")
    assert len(lines) == 2
    assert skipped_cases(tmp_path / "missing.xml") == []
