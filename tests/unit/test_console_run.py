"""A command on the console shell: its output between the markers, whatever else the kernel
prints on the same console meanwhile.

A real Console, not attached: what the guest "prints" is scripted from what was typed.
"""

from __future__ import annotations

import re
from pathlib import Path

from reprolab.console import Console


class _ScriptedConsole(Console):
    """Answers each typed command line with ``reply(token)``."""

    def __init__(self, log: Path, reply: str) -> None:
        super().__init__("test:///default", "rl-test", log)
        self.reply = reply
        self.pending = b""

    def _write(self, line: str) -> None:
        token = re.search(r"__RLS_ (\w+)", line)
        assert token is not None
        self.pending = self.reply.replace("TOKEN", token.group(1)).encode()

    def pump(self, timeout: float) -> bytes:
        data, self.pending = self.pending, b""
        if data:
            self._record(data)
        return data


def _run(tmp_path: Path, reply: str) -> tuple[int, str]:
    console = _ScriptedConsole(tmp_path / "console.log", reply)
    console.assume_synced()
    result = console.run("uname -r", timeout=2)
    return result.rc, result.stdout


def test_output_between_the_markers(tmp_path: Path) -> None:
    assert _run(tmp_path, "__RLS_TOKEN\r\n6.1.0\r\n__RLE_TOKEN 0\r\n") == (0, "6.1.0\n")


def test_a_kernel_line_right_after_the_start_marker_is_output_not_a_timeout(
        tmp_path: Path) -> None:
    """Seen on a restored guest: its clocksource switch landed between the start marker
    and its newline, and the wait ran out after 30 s with the answer on the console."""
    rc, out = _run(tmp_path, "__RLS_TOKEN[    1.767856] clocksource: Switched to clocksource "
                             "tsc\r\n6.1.0\r\n__RLE_TOKEN 0\r\n")
    assert rc == 0 and out.endswith("6.1.0\n") and "clocksource" in out


def test_a_console_attached_ahead_logs_on_into_its_attempt(tmp_path: Path) -> None:
    """A guest restored ahead has its console before its attempt has a directory: what it
    logged moves after what the attempt's log holds (the saved boot's console), and what
    comes next lands there too."""
    console = _ScriptedConsole(tmp_path / "run" / "ahead-console.log", "")
    console.log_path.parent.mkdir()
    console._log = console.log_path.open("ab", buffering=0)
    console._record(b"before\n")
    attempt = tmp_path / "attempt-003" / "console.log"
    attempt.parent.mkdir()
    attempt.write_bytes(b"boot\n")
    console.move_log(attempt)
    console._record(b"after\n")
    console.close()
    assert attempt.read_bytes() == b"boot\nbefore\nafter\n"
    assert console.log_path == attempt and not (tmp_path / "run" / "ahead-console.log").exists()
