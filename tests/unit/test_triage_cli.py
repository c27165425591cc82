"""``reprolab triage`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprolab.cli import EXIT_USER, main

DATA = Path(__file__).resolve().parents[1] / "data" / "console"


def test_json_one_object_per_log_in_order(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 10)
    logs = [DATA / "debian-6.1-sysrq-crash.log", junk, DATA / "debian-6.1-hung-task.log"]
    assert main(["triage", "--format", "json", *map(str, logs)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["crashed"] for o in out] == [True, False, True]
    assert out[0]["title"] == "kernel panic: sysrq triggered crash"
    assert out[2]["title"] == "INFO: task hung in mnt_want_write"
    assert list(out[0])[:7] == ["crashed", "title", "alt_titles", "kind", "frame", "corrupted",
                                "report"]


def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["triage", str(DATA / "debian-6.1-rt-throttling.log")]) == 0
    out = capsys.readouterr().out
    assert "sched: RT throttling activated" in out and "kind: rt-throttling" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["triage"], "give console LOG files"),
        (["triage", "/nonexistent/console.log"], "cannot read log"),
        (["triage", "--vmlinux", "/bin/ls"], "--vmlinux and --elf need --vmcore"),
        (["triage", "--vmcore", "/etc/hostname"], "is not a vmcore"),
    ],
)
def test_bad_input_is_one_line_user_error(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USER
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
