"""Snapshot restore of a disk-image guest: each attempt starts from the saved disk state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from vmtools import make_case, our_domains

pytestmark = pytest.mark.vm


def test_disk_guest_restored_twice_starts_from_the_saved_disk(tmp_path: Path) -> None:
    from reprolab.run.snapshot import SnapshotSession

    case = make_case("it::snapshot-disk", expect={"kind": "panic"},
                     guest={"vcpus": 1, "memory": "512M", "image": "tools-disk"})
    session = SnapshotSession(artifacts=tmp_path / "artifacts")
    seen: list[dict[str, Any]] = []

    def body(guest: Any) -> None:
        ssh = guest.ssh
        assert ssh is not None
        # What the previous attempt left on the disk, read past the page and dentry caches
        # (they come from the saved RAM and know nothing of it), then leave a mark.
        # (A restore onto the previous attempt's disk shows the mark, or "Bad message".)
        before = ssh.run("sync; echo 3 > /proc/sys/vm/drop_caches; ls -A /root 2>&1; true",
                         check=True).stdout
        errors = ssh.run("dmesg | grep -i 'ext4-fs error'; true", check=True).stdout
        root = ssh.run("findmnt -no SOURCE /", check=True).stdout.strip()
        # A freeze checkpoints the journal: the mark reaches its home blocks on the disk.
        ssh.run(f"echo attempt-{len(seen) + 1} > /root/attempt-mark && sync && "
                "fsfreeze -f / && fsfreeze -u /")
        written = ssh.run("cat /root/attempt-mark 2>&1").stdout
        seen.append({"before": before, "errors": errors, "root": root, "written": written,
                     "name": guest.domain.name})

    try:
        for index in (1, 2):
            result, error = session.run_attempt(case, index, body)
            assert error is None, error
            assert result.outcome.value == "not-reproduced", result
        assert session.restores == 2
        attempts = sorted((tmp_path / "artifacts").glob("*/attempt-*"))
        assert len(attempts) == 2
        for attempt in attempts:
            info = json.loads((attempt / "snapshot.json").read_text())
            assert info["disks"] and info["restore_seconds"] > 0
    finally:
        session.close()
    assert [s["root"] for s in seen] == ["/dev/vda", "/dev/vda"]
    assert seen[0]["written"] == "attempt-1\n" and seen[1]["written"] == "attempt-2\n"
    # Attempt 1 wrote and synced its mark; attempt 2 runs on a fresh copy of the saved disk.
    for s in seen:
        assert ".ssh" in s["before"] and "attempt-mark" not in s["before"], s
        assert s["errors"] == "", s
    assert seen[0]["name"] == seen[1]["name"]
    assert seen[0]["name"] not in our_domains()
    # close() removed the frozen disk with the save file.
    assert not list(session.run_dir.parent.glob(f"{session.run_dir.name}/*.frozen.qcow2"))
