"""The daily loop end to end on the smoke case: `reprolab run --attempts 2` runs both
attempts, shows each phase as it happens, prints one verdict summary, leaves tidy attempt
directories, and its dossiers' commands really open the dumps."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from vmtools import domain_name, our_domains

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "testcases" / "test_sysrq_panic.py"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "reprolab.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=1500)
    print(done.stdout[-6000:], done.stderr[-3000:])
    return done


@pytest.mark.vm
def _vmcore(attempt: Path) -> Path:
    """The attempt's dump as taken: compressed by default, raw with dump="elf"."""
    kdump = attempt / "vmcore.kdump"
    return kdump if kdump.exists() else attempt / "vmcore.elf"


def test_run_attempts_progress_summary_tidy_and_dumps_that_open(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _cli("run", "--attempts", "2", "--artifacts", str(out), str(CASE), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    attempts = sorted(out.glob("*/attempt-*"))
    # --attempts 2 runs the second attempt although the first one (normally) hits.
    assert [a.name for a in attempts] == ["attempt-001", "attempt-002"]
    row = json.loads((out / "results.jsonl").read_text())
    assert (row["attempts"], row["until"]) == (2, "all") and row["hits"] >= 1

    text = done.stdout
    for a in attempts:
        n = int(a.name.split("-")[1])
        assert f"test_sysrq_panic #{n}: started; attempt dir {a}" in text
        assert f"test_sysrq_panic #{n}: booting; live console {a / 'console.log'}" in text
        for phase in ("running at", "crashed (", "dumping", "triaging at", "done in"):
            assert f"test_sysrq_panic #{n}: {phase}" in text, phase
    # The first attempt's dump and dossier were written while the second ran (the console
    # decided its verdict); the last one's are written before its verdict.
    assert "test_sysrq_panic #1: dumping (after the verdict, while the next attempt runs)" in text
    assert "test_sysrq_panic #2: dumping at" in text
    # One verdict summary: the table, not the plugin's section as well.
    assert text.count("reprolab verdicts") == 1
    assert "short test summary" not in text

    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["junit.xml",
                                                                    "results.jsonl"]
    for a in attempts:
        raw = (a / "console.raw").read_bytes()
        log = (a / "console.log").read_text()
        assert b"sysrq triggered crash" in raw and "sysrq triggered crash" in log
        assert "\x1b" not in log and "\r" not in log
        result = json.loads((a / "result.json").read_text())
        if (a / "serial.log").exists():  # kept only when it differs, and then explained
            assert any(n.startswith("serial.log kept: ") for n in result["notes"])

        if result["outcome"] != "reproduced":
            continue
        dossier = json.loads((a / "report.json").read_text())
        commands = [shlex.split(c) for c in dossier["open_with"]["commands"]]
        vmcore = _vmcore(a)
        elf = vmcore
        if vmcore.suffix == ".kdump":
            # A compressed dump (the default) is converted first, by the command given.
            convert = commands.pop(0)
            assert convert[:4] == ["reprolab", "triage", "--vmcore", str(vmcore)], convert
            subprocess.run([sys.executable, "-m", "reprolab.cli", *convert[1:]], check=True,
                           capture_output=True, timeout=600)
            elf = Path(convert[convert.index("--elf") + 1])
        drgn = commands[0]
        assert Path(drgn[0]).name == "drgn" and drgn[1:3] == ["-c", str(elf)]
        if dossier["vmlinux"]:
            probe = "print(prog.crashed_thread().stack_trace())"
            want = "sysrq_handle_crash"
        else:
            probe = "import drgn; print(bool(prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL))"
            want = "True"
        opened = subprocess.run([*drgn, "-q", "-e", probe], capture_output=True, text=True,
                                timeout=600)
        assert want in opened.stdout, opened.stderr
        assert "## Open the dump" in (a / "report.md").read_text()

    # Standalone triage finds the same vmlinux (by build id) as the run's dossier did.
    first = next(a for a in attempts
                 if json.loads((a / "result.json").read_text())["outcome"] == "reproduced")
    again = _cli("triage", "--format", "json", "--vmcore", str(_vmcore(first)),
                 "--out", str(tmp_path / "standalone"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    standalone = json.loads(again.stdout.splitlines()[-1])
    original = json.loads((first / "report.json").read_text())
    assert standalone["build_id"] == original["build_id"]
    assert standalone["vmlinux"] == original["vmlinux"]
    assert not {domain_name(a) for a in attempts} & set(our_domains())
