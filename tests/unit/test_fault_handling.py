"""The fault handling that needs no guest: scratch reaping, serial pieces, a full console
disk, own domains left on a lost connection, and the typed fields a result carries."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reprolab.console import Console
from reprolab.guest.spec import GuestSpec
from reprolab.run.attempt import AttemptResult
from reprolab.run.verdict import Outcome
from reprolab.virt.connection import open_connection
from reprolab.virt.domain import unique_name
from reprolab.virt.domain_xml import render_domain_xml
from reprolab.virt.hostfiles import LocalFiles
from reprolab.virt.metadata import RunTag
from reprolab.virt.reaper import reap_orphans
from reprolab.virt.scratch import claim, reap_scratch
from reprolab.virt.seriallog import collect_serial


def test_scratch_of_a_dead_owner_is_reaped_a_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / "session-dead"
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from reprolab.virt.scratch import claim; claim(Path(sys.argv[1]))",
                    str(dead)], check=True)
    (dead / "attempt-001-abc.serial.log").write_bytes(b"x" * 100)
    mine = tmp_path / "session-mine"
    claim(mine)
    unowned = tmp_path / "session-unowned"  # no owner file, fresh: may be starting up
    unowned.mkdir()
    reaped = reap_scratch(tmp_path)
    assert [r.path for r in reaped] == [dead]
    assert "is gone" in reaped[0].reason
    assert mine.exists() and unowned.exists()
    # Once older than the limit, a directory nobody owns goes; a live owner's never does.
    assert [r.path for r in reap_scratch(tmp_path, max_age_s=-1)] == [unowned]
    assert mine.exists()


def test_rotated_serial_pieces_are_joined_oldest_first(tmp_path: Path) -> None:
    scratch = tmp_path / "run"
    scratch.mkdir()
    serial = scratch / "a.serial.log"
    # virtlogd's naming: .0 is the newest rotated piece, the live file newer still.
    for name, text in (("a.serial.log.2", b"one\n"), ("a.serial.log.1", b"two\n"),
                       ("a.serial.log.0", b"three\n"), ("a.serial.log", b"four\n")):
        (scratch / name).write_bytes(text)
    dest = tmp_path / "art" / "serial.log"
    notes = collect_serial(LocalFiles(scratch), serial, dest, console_bytes=18)
    assert dest.read_bytes() == b"one\ntwo\nthree\nfour\n"
    assert notes == ["serial.log: joined 4 pieces virtlogd rotated"]
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in dest.parent.iterdir()) == [
        "serial.log"]


def test_a_short_serial_log_gets_a_truncation_note(tmp_path: Path) -> None:
    (tmp_path / "b.serial.log").write_bytes(b"tail only\n")
    notes = collect_serial(LocalFiles(tmp_path), tmp_path / "b.serial.log",
                           tmp_path / "out" / "serial.log", console_bytes=5000)
    assert len(notes) == 1 and notes[0].startswith("serial.log truncated: libvirt's copy "
                                                    "holds 10 of the 5000 console bytes")


def test_console_bytes_survive_a_full_disk(tmp_path: Path) -> None:
    console = Console("qemu:///system", "none", tmp_path / "console.log")
    console._log = open("/dev/full", "ab", buffering=0)  # noqa: SIM115 - every write: ENOSPC
    console._record(b"first ")
    console._record(b"second ")
    assert console.write_error is not None and "No space left" in console.write_error
    console._log.close()
    console._log = (tmp_path / "console.log").open("ab", buffering=0)  # space again
    console._record(b"third\n")
    console.close()
    assert (tmp_path / "console.log").read_bytes() == b"first second third\n"


def test_own_domains_on_a_lost_connection_are_reaped_only_when_asked() -> None:
    conn: Any = open_connection("test:///default")
    try:
        xml = render_domain_xml(GuestSpec(kernel=Path("/k"), initrd=Path("/i")),
                                name=unique_name("mine"), tag=RunTag.current("t"))
        dom = conn.createXML(xml, 0)
        assert reap_orphans(conn) == []  # the owner (this process) is alive
        reaped = reap_orphans(conn, mine=True)
        assert [r.name for r in reaped] == [dom.name()]
        assert "lost" in reaped[0].reason
    finally:
        conn.close()


@pytest.mark.parametrize("dump_error", [None, "memory-only dump failed: No space left"])
def test_result_carries_typed_dump_and_error_fields(tmp_path: Path, dump_error: str | None
                                                     ) -> None:
    result = AttemptResult("c", 1, Outcome.REPRODUCED, tmp_path, "tcg", dump_error=dump_error)
    saved = json.loads(result.write().read_text())
    assert saved["dump_error"] == dump_error and result.dump_failed is (dump_error is not None)
    assert saved["error_type"] is None
