"""Attempt directories: console.log as text with the raw bytes kept, one serial copy."""

from __future__ import annotations

from pathlib import Path

from reprolab.consolelog import HARNESS_MARK, RAW, clean_text, tidy_attempt_logs
from reprolab.detect.report import parse_log

RAW_LOG = Path(__file__).resolve().parents[1] / "data" / "console-raw" / \
    "debian-6.1-sysrq-with-probes.raw"


def test_text_form_of_a_real_log() -> None:
    raw = RAW_LOG.read_bytes()
    assert b"\x1b[6n" in raw and b"\r\n" in raw
    text = clean_text(raw)
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    marked = [ln for ln in lines if ln.startswith(HARNESS_MARK)]
    assert marked == [HARNESS_MARK + "reprolab# echo P$((6*7))847a94",
                      HARNESS_MARK + "P42847a94"]
    # The test's own command is not the harness's.
    assert "reprolab# echo c > /proc/sysrq-trigger" in lines
    # The text form still titles the same crash as the raw bytes.
    assert parse_log(text.encode()).title == parse_log(raw).title  # type: ignore[union-attr]


def test_identical_serial_copy_is_dropped_and_raw_kept(tmp_path: Path) -> None:
    raw = RAW_LOG.read_bytes()
    (tmp_path / "console.log").write_bytes(raw)
    (tmp_path / "serial.log").write_bytes(raw)
    assert tidy_attempt_logs(tmp_path) == []
    assert not (tmp_path / "serial.log").exists()
    assert (tmp_path / RAW).read_bytes() == raw
    assert (tmp_path / "console.log").read_text() == clean_text(raw)
    # Idempotent: a second pass keeps the raw bytes, not the text, as raw.
    assert tidy_attempt_logs(tmp_path) == [] and (tmp_path / RAW).read_bytes() == raw


def test_differing_serial_copy_is_kept_and_explained(tmp_path: Path) -> None:
    raw = RAW_LOG.read_bytes()
    (tmp_path / "console.log").write_bytes(raw)
    (tmp_path / "serial.log").write_bytes(b"SeaBIOS early bytes\r\n" + raw)
    [note] = tidy_attempt_logs(tmp_path)
    assert note == ("serial.log kept: virtlogd's copy has 21 bytes before what the console "
                    "read (written before the console attached)")
    assert (tmp_path / "serial.log").exists()
