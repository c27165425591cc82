"""The subprocess helper and the CLI's one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from reprolab.errors import InfraError, UserError
from reprolab.kernel.artifacts import stock_kernel, stock_release
from reprolab.proc import run


def test_run_captures_and_checks() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 0"])
    assert done.ok and done.stdout == "out\n" and done.stderr == "err\n"
    with pytest.raises(InfraError, match="failed with exit 3"):
        run(["sh", "-c", "echo boom; exit 3"])
    with pytest.raises(UserError, match="failed with exit 1"):
        run(["false"], error=UserError)
    assert run(["false"], check=False).rc == 1


def test_run_missing_command_and_timeout(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="command not found"):
        run(["reprolab-no-such-tool"])
    with pytest.raises(InfraError, match="timed out"):
        run(["sleep", "5"], timeout=0.2)
    log = tmp_path / "build.log"
    with pytest.raises(InfraError, match=r"log: .*build.log\): last"):
        run(["sh", "-c", "echo first; echo last; exit 2"], log=log)
    assert log.read_text() == "first\nlast\n"


def test_missing_stock_kernel_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no stock kernel.*apt-get install linux-image-amd64"):
        stock_kernel(boot=tmp_path, modules=tmp_path)


def test_stock_release_is_the_newest_installed_with_modules(tmp_path: Path) -> None:
    """Debian's point releases move the stock kernel: -57 after -56, and -100 after -99."""
    boot, mods = tmp_path / "boot", tmp_path / "root"
    boot.mkdir()
    for release in ("6.1.0-56-amd64", "6.1.0-57-amd64", "6.1.0-9-amd64", "6.1.0-60-amd64"):
        (boot / f"vmlinuz-{release}").write_bytes(b"x")
    for release in ("6.1.0-56-amd64", "6.1.0-57-amd64", "6.1.0-9-amd64"):
        (mods / "lib/modules" / release).mkdir(parents=True)
    # -60 has no modules (a half-installed package): not bootable with its modules, so skipped.
    assert stock_release(boot=boot, modules=mods) == "6.1.0-57-amd64"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprolab.cli", *args],
                          capture_output=True, text=True, check=False)


def test_cli_bad_uri_is_one_line_nonzero() -> None:
    done = _cli("doctor", "--uri", "bogus")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert "fail  libvirt      unknown libvirt URI 'bogus'" in done.stdout
