"""`reprolab repro` end to end: attempts with snapshot restore, bundles, and a replay."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from vmtools import domain_name, our_domains

from reprolab.run.evidence import NOTE as EVIDENCE_NOTE

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "testcases" / "test_sysrq_panic.py"


def _repro(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "reprolab.cli", "repro", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=900)
    print(done.stdout[-4000:], done.stderr[-4000:])
    return done


@pytest.mark.vm
def test_repro_with_snapshot_restore_then_replay(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _repro(str(CASE), "--attempts", "3", "--until", "all", "--snapshot",
                  "--artifacts", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stdout
    attempts = sorted(out.glob("*/attempt-*"))
    assert len(attempts) == 3
    # The first attempt booted (and saved); the others were restored (the second may have
    # booted a guest of its own first, when the waits it saves pay for its boot).
    assert (attempts[0] / "boot-console.log").exists()
    for restored in attempts[1:]:
        info = json.loads((restored / "snapshot.json").read_text())
        assert info["restore_seconds"] > 0
    for n, attempt in enumerate(attempts, 1):
        result = json.loads((attempt / "result.json").read_text())
        assert result["outcome"] == "reproduced"
        # Attempts 1 and 2 were dumped and triaged while the next one ran; every one has
        # its vmcore and dossier on disk, read by drgn in place.
        assert Path(result["vmcore"]).is_file() and Path(result["dossier"]).is_file()
        assert json.loads(Path(result["dossier"]).read_text())["read_as"] == "kdump"
        assert (EVIDENCE_NOTE in result["notes"]) == (n < 3), result["notes"]
        bundle = json.loads((attempt / "bundle" / "bundle.json").read_text())
        assert bundle["kernel"] == {"source": "stock"}
        assert bundle["testcase"].endswith("::test_sysrq_panic")
    # Restored domains are not AUTODESTROY: the session must have destroyed them.
    names = {domain_name(a) for a in attempts}
    assert not names & set(our_domains())

    replay = _repro("--bundle", str(attempts[1]), "--artifacts", str(tmp_path / "replay"),
                    cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "1/1" in replay.stdout
    assert "warning" not in replay.stdout


@pytest.mark.vm
def test_restored_guest_is_tagged_and_destroyed_on_close(tmp_path: Path) -> None:
    """A restored domain cannot be AUTODESTROY: it keeps the run tag, and close() kills it."""
    from reprolab.replay import load_testcase
    from reprolab.run.snapshot import SnapshotSession
    from reprolab.virt.domain import run_tag_of

    loaded = load_testcase(str(CASE))
    session = SnapshotSession(artifacts=tmp_path / "artifacts")
    tags = []

    def body(guest: object) -> None:
        dom = guest.domain.dom  # type: ignore[attr-defined]
        tags.append((dom.name(), run_tag_of(dom)))

    try:
        for index in (1, 2):
            result, error = session.run_attempt(loaded.case, index, body)
            assert error is None and result.outcome.value == "not-reproduced"
        assert session.restores == 2
    finally:
        session.close()
    assert len(tags) == 2 and tags[0][0] == tags[1][0]
    assert all(tag is not None and tag.test == loaded.case.name for _, tag in tags)
    assert tags[0][0] not in our_domains()


@pytest.mark.vm
def test_restores_alternate_between_two_guests_while_one_is_dumped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With attempts enough to repay a second boot, the second attempt boots and saves a
    second guest (the first is still being dumped); then restores take the guests in turn,
    each attempt's evidence finishing while the next runs, and each guest restored while
    another runs (from the third attempt on). The dumps keep their CPU share: the
    next restore waits for them. Nothing is lost: every attempt ends with its vmcore and
    dossier, the crash hook hears of each only once they are on disk, and no guest is
    left."""
    from reprolab.replay import load_testcase
    from reprolab.run.snapshot import BOOT_LOG, SnapshotSession
    shares = _spy_on_yield(monkeypatch)

    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=6, until="all")
    session = SnapshotSession(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    heard: list[tuple[int, bool]] = []
    session.on_crash = lambda result, _report: heard.append(
        (result.index, result.vmcore is not None and result.vmcore.is_file()
         and result.dossier is not None and result.dossier.is_file()))
    try:
        results = [session.run_attempt(case, index, loaded.body())[0]
                   for index in range(1, 7)]
    finally:
        session.close()
    assert [r.outcome.value for r in results] == ["reproduced"] * 6
    booted = [(r.directory / BOOT_LOG).exists() for r in results]
    names = [domain_name(r.directory) for r in results]
    # A third guest boots only when attempts waited for the one restored ahead long
    # enough to repay its boot (a loaded machine's dumps): never more, never the same twice
    # in a row.
    assert booted[:3] == [True, True, False] and sum(booted) == len(set(names)) <= 3
    assert all(a != b for a, b in itertools.pairwise(names))
    assert sorted(heard) == [(n, True) for n in range(1, 7)]
    assert shares == []
    snaps = [json.loads((r.directory / "snapshot.json").read_text()) for r in results]
    ahead = [snap["restored_ahead_seconds"] for snap in snaps]
    assert all((s is None) == boot for s, boot in zip(ahead, booted, strict=True))
    assert all(s > 0 for s in ahead if s is not None)
    # Their consoles were attached there too, and each attempt's log holds its own run.
    assert [snap["console_attached_ahead"] for snap in snaps] == [not b for b in booted]
    for r in results:
        assert "sysrq triggered crash" in (r.directory / "console.log").read_text(
            errors="replace")
    for r in results:
        final = json.loads((r.directory / "result.json").read_text())
        assert Path(final["vmcore"]).is_file() and Path(final["dossier"]).is_file()
    assert not set(names) & set(our_domains())


def _spy_on_yield(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The CPU share libvirt reports for each guest whose evidence stepped aside."""
    from reprolab.virt.domain import Domain

    shares: list[int] = []
    yield_cpu = Domain.yield_cpu

    def spy(domain: Domain) -> bool:
        done = yield_cpu(domain)
        shares.append(domain.dom.schedulerParameters()["cpu_shares"] if done else -1)
        return done

    monkeypatch.setattr(Domain, "yield_cpu", spy)
    return shares


@pytest.mark.vm
def test_a_dump_behind_the_next_boot_yields_the_cpu_to_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cold attempts: the first attempt's guest is dumped while the second boots, at
    libvirt's smallest CPU share (asked of libvirt, not assumed); the last attempt's own
    dump is on its path and keeps its share. Both end with vmcore and dossier."""
    from reprolab.replay import load_testcase
    from reprolab.run.session import Session
    from reprolab.virt.domain import MIN_CPU_SHARES

    shares = _spy_on_yield(monkeypatch)
    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=2, until="all")
    session = Session(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    try:
        results = [session.run_attempt(case, index, loaded.body())[0] for index in (1, 2)]
        session.finish_teardowns()
    finally:
        session.close()
    assert [r.outcome.value for r in results] == ["reproduced"] * 2
    assert shares == [MIN_CPU_SHARES]
    for r in results:
        final = json.loads((r.directory / "result.json").read_text())
        assert Path(final["vmcore"]).is_file() and Path(final["dossier"]).is_file()
    assert not {domain_name(r.directory) for r in results} & set(our_domains())


@pytest.mark.vm
def test_cold_attempts_start_the_next_guest_behind_the_running_one(tmp_path: Path) -> None:
    """Cold attempts of one case: each next attempt's guest is started, paused, with its
    console attached, while the attempt before runs; its attempt only resumes it, and its
    console log holds its own boot from the first line, and no other. After the case's
    last attempt, and after a hit that stops it (until=first-hit), no guest is left
    started for an attempt that will not come."""
    from reprolab.replay import load_testcase
    from reprolab.run.session import STARTED_AHEAD, Session

    loaded = load_testcase(str(CASE))
    case = loaded.case.with_overrides(attempts=3, until="all")
    first_hit = loaded.case.with_overrides(attempts=3, until="first-hit")
    session = Session(artifacts=tmp_path / "artifacts", overlap_teardown=True)
    try:
        results = [session.run_attempt(case, index, loaded.body())[0] for index in (1, 2, 3)]
        session.finish_teardowns()
        after_last = our_domains()
        stopped, _ = session.run_attempt(first_hit, 1, loaded.body())
        session.finish_teardowns()
        after_hit = our_domains()
    finally:
        session.close()
    assert [r.outcome.value for r in [*results, stopped]] == ["reproduced"] * 4
    assert after_last == [] and after_hit == []
    assert [(r.directory / STARTED_AHEAD).exists() for r in results] == [False, True, True]
    for r in results[1:]:
        info = json.loads((r.directory / STARTED_AHEAD).read_text())
        assert info["started_ahead_seconds"] > 0 and info["console_attached_ahead"] is True
    names = [domain_name(r.directory) for r in results]
    assert len(set(names)) == 3
    for r in results:
        log = (r.directory / "console.log").read_text(errors="replace")
        assert log.count("Linux version") == 1 and log.count("sysrq triggered crash") >= 1
        final = json.loads((r.directory / "result.json").read_text())
        assert Path(final["vmcore"]).is_file() and Path(final["dossier"]).is_file()
