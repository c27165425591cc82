"""An exact replay for real (issue 18 item 2): a sysrq panic on the small 6.12 kernel, its
bundle copied elsewhere and replayed. The replay must boot the very kernel of the original
(same build ID, taken from the cache, no rebuild), show the same signature and say both;
the same (portable) bundle replays on an empty cache from the files it carries."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from vmtools import domain_name, our_domains

from reprolab.paths import cache_root
from reprolab.triage.vmcore import elf_build_id

TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")

CASE = '''
import pytest


@pytest.mark.reprolab(
    kernel="build:linux-source-6.12",
    guest={"vcpus": 1, "memory": "256M", "image": "minimal"},
    # What is tested is the replay's identity with the original, not the kernel's stall
    # detectors: on a starved TCG vCPU (2 shared cores) the workqueue watchdog can report a
    # stall before the sysrq lands, which would be another signature for reasons of load.
    cmdline={"workqueue.watchdog_thresh": 0},
    expect={"title": "kernel panic: sysrq triggered crash"},
    dump="kdump-zlib",
    mode="reproduce",
)
def test_sysrq_on_612(guest):
    guest.console.send("echo c > /proc/sysrq-trigger")
    guest.wait(seconds=60)
'''


def _repro(*args: str, cwd: Path, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "reprolab.cli", "repro", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=3600,
                          env={**os.environ, **(env or {})})
    print(done.stdout[-6000:], done.stderr[-4000:])
    return done


@pytest.mark.vm
@pytest.mark.skipif(not TARBALL.exists(), reason=f"{TARBALL} missing (linux-source-6.12)")
def test_copied_bundle_replays_the_same_kernel_and_signature(tmp_path: Path) -> None:
    case = tmp_path / "cases" / "test_sysrq_612.py"
    case.parent.mkdir()
    case.write_text(textwrap.dedent(CASE))
    first = _repro(str(case), "--portable", "--artifacts", str(tmp_path / "first"),
                   cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    attempt = next((tmp_path / "first").glob("*/attempt-001"))
    original = json.loads((attempt / "bundle" / "bundle.json").read_text())
    recorded = original["artifacts"]["kernel"]
    assert recorded["key"].startswith("build-6.12-") and recorded["build_id"]
    assert original["original"]["outcome"] == "reproduced"
    # The dump names the same kernel (VMCOREINFO BUILD-ID) as the vmlinux the bundle records,
    # and the dossier from the 0600 dump is 0600 too.
    dossier = json.loads((attempt / "report.json").read_text())
    assert dossier["build_id"] == recorded["build_id"]
    vmcore = next(attempt.glob("vmcore.*"))
    assert stat.S_IMODE((attempt / "report.json").stat().st_mode) == \
        stat.S_IMODE(vmcore.stat().st_mode) & 0o666

    # Another place, another name: nothing of the bundle's path may matter.
    copied = tmp_path / "elsewhere" / "bundle-copy"
    shutil.copytree(attempt / "bundle", copied)
    replay = _repro("--bundle", str(copied), "--artifacts", str(tmp_path / "replay"),
                    cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    out = replay.stdout
    assert "reused from the cache" in out and "rebuilds the kernel" not in out
    assert f"build ID {recorded['build_id']}, identical to the bundle's" in out
    assert "signature matches the original" in out
    report = json.loads((tmp_path / "replay" / "replay.json").read_text())
    assert report["kernel"]["identical"] and report["kernel"]["key"] == recorded["key"]
    assert report["kernel"]["build_id"] == recorded["build_id"]
    assert report["signature_matches"] is True
    again = next((tmp_path / "replay").glob("*/attempt-001"))
    result = json.loads((again / "result.json").read_text())
    assert result["signature"] == original["original"]["signature"]
    assert any("signature matches the original" in note for note in result["notes"])
    # The replay's own dump is of that kernel too, and readable with the cached vmlinux.
    vmlinux = cache_root() / "kernels" / recorded["key"] / "vmlinux"
    assert json.loads((again / "report.json").read_text())["build_id"] == \
        elf_build_id(vmlinux) == recorded["build_id"]
    # The image it booted is QEMU's to read, nobody else's.
    image = recorded_image(original)
    assert stat.S_IMODE(image.stat().st_mode) & 0o007 == 0
    names = {domain_name(attempt), domain_name(again)}

    # A portable bundle on "another host" (an empty cache): it carries its kernel and initrd.
    empty = Path(tempfile.mkdtemp(dir=cache_root().parent, prefix="portable-test-"))
    try:
        empty.chmod(0o755)  # QEMU must traverse to what the replay installs there
        portable = _repro("--bundle", str(copied), "--artifacts", str(tmp_path / "portable"),
                          cwd=tmp_path, env={"REPROLAB_CACHE": str(empty)})
        assert portable.returncode == 0, portable.stderr
        assert "kernel: installed from the portable bundle" in portable.stdout
        assert f"build ID {recorded['build_id']}, identical to the bundle's" in portable.stdout
        assert "signature matches the original" in portable.stdout
        assert not (empty / "kernels" / recorded["key"]).exists()  # never under its key
        names.add(domain_name(next((tmp_path / "portable").glob("*/attempt-001"))))
    finally:
        shutil.rmtree(empty)
    assert not names & set(our_domains())


def recorded_image(bundle: dict[str, object]) -> Path:
    image = bundle["artifacts"]["image"]  # type: ignore[index]
    return cache_root() / "images" / f"{image['recipe']}-{image['key'][:16]}" / "initrd.img"
