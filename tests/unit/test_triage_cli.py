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
        (["triage", "--vmlinux", "/bin/ls"], "--vmlinux needs --vmcore"),
        (["triage", "--vmcore", "/etc/hostname"], "is not a vmcore"),
    ],
)
def test_bad_input_is_one_line_user_error(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USER
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_log_is_reported_when_one_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: a missing log stopped the command and dropped the logs after it."""
    missing = tmp_path / "gone.log"
    logs = [DATA / "debian-6.1-sysrq-crash.log", missing, DATA / "debian-6.1-hung-task.log"]
    assert main(["triage", "--format", "json", *map(str, logs)]) == EXIT_USER
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert [o["log"] for o in out] == [str(p) for p in logs]
    assert out[1] == {"log": str(missing), "error": f"cannot read log {missing}: "
                      "No such file or directory"}
    assert out[2]["title"] == "INFO: task hung in mnt_want_write"
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "gone.log" in err[0] and "Traceback" not in captured.err
    assert main(["triage", *map(str, logs)]) == EXIT_USER
    text = capsys.readouterr().out
    assert "kernel panic: sysrq triggered crash" in text and "task hung" in text


@pytest.mark.parametrize("name", ["zero", "garbage", "nul", "invalid-utf8", "long-lines"])
def test_hostile_logs_give_a_result_not_a_traceback(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    panic = b"[    4.0] Kernel panic - not syncing: sysrq triggered crash\n"
    content = {
        "zero": b"\x00" * (3 << 20),
        "garbage": bytes((i * 7919 + 13) % 256 for i in range(1 << 20)) + b"\n" + panic,
        "nul": panic.replace(b"Kernel", b"\x00\x00Kernel"),
        "invalid-utf8": b"\xff\xfe\xc3(" * 1000 + b"\n" + panic,
        "long-lines": (b"[ 1.0] " + b"BUG: " * 20000 + b"\n") * 3 + b"x" * 100_000 + panic,
    }[name]
    log = tmp_path / f"{name}.log"
    log.write_bytes(content)
    assert main(["triage", "--format", "json", str(log)]) == 0
    (obj,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    if name == "zero":
        assert obj["crashed"] is False
    elif name == "long-lines":
        # A kernel-stamped "BUG: BUG: ..." line is a (silly) kernel report: titled, cut.
        assert obj["title"].startswith("BUG: BUG:") and len(obj["title"]) <= 120
    else:
        assert obj["title"] == "kernel panic: sysrq triggered crash"


def test_a_device_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`triage /dev/zero` ended in a MemoryError traceback."""
    assert main(["triage", "/dev/zero", str(DATA / "debian-6.1-hung-task.log")]) == EXIT_USER
    captured = capsys.readouterr()
    assert captured.err.strip() == "reprolab: error: cannot read log /dev/zero: a device, " \
        "not a log file"
    assert "task hung" in captured.out
