"""Exact replays (issue 18 item 2): a bundle finds its kernel and initrd in the cache by
content and build ID, a copied bundle finds them too, a missing kernel is a rebuild the
replay says, and a portable bundle carries them to a host that never had them."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from reprolab.bundle import MANIFEST, file_hash, load_bundle
from reprolab.case import CaseSpec
from reprolab.errors import UserError
from reprolab.image.build import GuestImage
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.replay import write_attempt_bundle
from reprolab.replay_cache import build_id, compare_signature, find_exact
from reprolab.triage.vmcore import elf_build_id

KEY = "build-6.12-" + "ab" * 10
IMAGE_KEY = "c" * 64
# Two ELF files with different GNU build IDs stand in for vmlinux (the note walker is the
# one the dossier uses on real vmlinux files).
ELF_A = Path("/bin/true")
ELF_B = Path("/bin/false")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(root))
    return root


def _kernel(cache: Path, vmlinux: Path = ELF_A) -> KernelArtifacts:
    entry = cache / "kernels" / KEY
    (entry / "modroot" / "lib" / "modules" / "6.12.0").mkdir(parents=True)
    (entry / "bzImage").write_bytes(b"bzImage bytes")
    shutil.copyfile(vmlinux, entry / "vmlinux")
    (entry / "config").write_text("CONFIG_SMP=y\n")
    (entry / "meta.json").write_text(json.dumps({"release": "6.12.0",
                                                 "source_id": "tar-1234"}))
    return KernelArtifacts(image=entry / "bzImage", release="6.12.0",
                           modules_root=entry / "modroot", config=entry / "config",
                           vmlinux=entry / "vmlinux", key=KEY, origin="build")


def _image(cache: Path) -> GuestImage:
    entry = cache / "images" / f"minimal-{IMAGE_KEY[:16]}"
    entry.mkdir(parents=True)
    (entry / "initrd.img").write_bytes(b"initrd bytes")
    image = GuestImage(recipe="minimal", kind="initramfs", initrd=entry / "initrd.img",
                       disk=None, cmdline=(), ready_marker="REPROLAB-READY",
                       host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG", has_ssh=True,
                       key=IMAGE_KEY)
    (entry / "image.json").write_text(json.dumps({
        "recipe": "minimal", "kind": "initramfs", "initrd": "initrd.img", "disk": None,
        "cmdline": [], "ready_marker": "REPROLAB-READY", "host_key": image.host_key,
        "has_ssh": True, "key": IMAGE_KEY, "build_seconds": 1.0}))
    return image


def _bundle(tmp_path: Path, cache: Path, *, portable: bool = False) -> Path:
    case_file = tmp_path / "test_exact_case.py"
    case_file.write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.reprolab(kernel="build:linux-source-6.12", expect={"kind": "panic"})
        def test_case(guest):
            pass
    '''))
    case = CaseSpec.from_marker(f"{case_file}::test_case",
                                {"kernel": "build:linux-source-6.12",
                                 "expect": {"kind": "panic"}})
    attempt = tmp_path / "attempt-001"
    attempt.mkdir()
    write_attempt_bundle(attempt, case=case, kernel_spec="build:linux-source-6.12",
                         kernel=_kernel(cache), image=_image(cache), cmdline="console=ttyS0",
                         domain_xml="<domain/>", portable=portable)
    return attempt / "bundle"


def test_bundle_names_kernel_and_initrd_by_content(tmp_path: Path, cache: Path) -> None:
    bundle = load_bundle(_bundle(tmp_path, cache))
    kernel = bundle.artifacts["kernel"]
    assert kernel["key"] == KEY
    assert kernel["build_id"] == elf_build_id(ELF_A) is not None
    assert kernel["image_sha256"] == file_hash(cache / "kernels" / KEY / "bzImage")
    assert bundle.artifacts["image"]["initrd_sha256"] == file_hash(
        cache / "images" / f"minimal-{IMAGE_KEY[:16]}" / "initrd.img")
    assert str(cache) not in json.dumps(bundle.artifacts)  # by content, not by path


def test_replay_reuses_the_cached_kernel_and_a_copied_bundle_too(tmp_path: Path,
                                                                 cache: Path) -> None:
    said: list[str] = []
    directory = _bundle(tmp_path, cache)
    exact = find_exact(load_bundle(directory), said.append)
    assert not exact.rebuild and exact.kernel is not None
    assert exact.kernel.key == KEY and build_id(exact.kernel) == exact.recorded_build_id
    assert exact.image is not None and exact.image.initrd == (
        cache / "images" / f"minimal-{IMAGE_KEY[:16]}" / "initrd.img")
    assert any("reused from the cache" in line for line in said)
    copied = tmp_path / "elsewhere" / "copy"
    shutil.copytree(directory, copied)
    again = find_exact(load_bundle(copied), said.append)
    assert again.kernel == exact.kernel and again.image == exact.image


def test_missing_or_different_kernel_is_a_rebuild_that_says_why(tmp_path: Path,
                                                                cache: Path) -> None:
    directory = _bundle(tmp_path, cache)
    entry = cache / "kernels" / KEY
    shutil.copyfile(ELF_B, entry / "vmlinux")  # same key, another build
    exact = find_exact(load_bundle(directory), lambda _m: None)
    assert exact.rebuild and "holds another kernel" in exact.how
    shutil.rmtree(entry)
    exact = find_exact(load_bundle(directory), lambda _m: None)
    assert exact.rebuild and "is not in this host's cache" in exact.how


def test_portable_bundle_replays_on_a_host_without_the_cache(tmp_path: Path,
                                                             cache: Path) -> None:
    directory = _bundle(tmp_path, cache, portable=True)
    assert (directory / "kernel" / "initrd").stat().st_mode & 0o077 == 0
    shutil.rmtree(cache)  # "another host"
    exact = find_exact(load_bundle(directory), lambda _m: None)
    assert exact.kernel is not None and exact.image is not None
    assert exact.kernel.key.startswith("bundle-")  # never under the claimed build key
    assert not (cache / "kernels" / KEY).exists()
    assert build_id(exact.kernel) == elf_build_id(ELF_A)
    assert exact.image.initrd is not None and exact.image.initrd.read_bytes() == b"initrd bytes"
    assert exact.image.host_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG"
    # The fixture's image does not say its shell prints the marker: replays probe first.
    assert exact.image.shell_at_ready is False


@pytest.mark.parametrize("claim", [True, "yes"])
def test_portable_bundle_says_whether_its_shell_prints_the_marker(
        tmp_path: Path, cache: Path, claim: object) -> None:
    directory = _bundle(tmp_path, cache, portable=True)
    shutil.rmtree(cache)
    data = json.loads((directory / MANIFEST).read_text())
    data["artifacts"]["image"]["shell_at_ready"] = claim
    (directory / MANIFEST).write_text(json.dumps(data))
    if claim is True:
        exact = find_exact(load_bundle(directory), lambda _m: None)
        assert exact.image is not None and exact.image.shell_at_ready is True
        return
    with pytest.raises(UserError, match=r"field 'artifacts\.image\.shell_at_ready' must be"):
        find_exact(load_bundle(directory), lambda _m: None)


def test_portable_bundle_with_another_vmlinux_is_refused(tmp_path: Path, cache: Path) -> None:
    directory = _bundle(tmp_path, cache, portable=True)
    shutil.rmtree(cache)
    shutil.copyfile(ELF_B, directory / "kernel" / "vmlinux")
    data = json.loads((directory / MANIFEST).read_text())
    data["carried"]["vmlinux"]["sha256"] = file_hash(directory / "kernel" / "vmlinux")
    (directory / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"field 'carried\.vmlinux' does not have the build ID"):
        find_exact(load_bundle(directory), lambda _m: None)


def test_forged_cache_key_is_refused(tmp_path: Path, cache: Path) -> None:
    directory = _bundle(tmp_path, cache)
    data = json.loads((directory / MANIFEST).read_text())
    data["artifacts"]["kernel"]["key"] = "../../../etc"
    (directory / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"field 'artifacts\.kernel\.key'"):
        find_exact(load_bundle(directory), lambda _m: None)


def test_signature_comparison() -> None:
    assert compare_signature({"signature": "sig-a"}, "sig-a")[0] is True
    match, line = compare_signature({"signature": "sig-a"}, "sig-b")
    assert match is False and "original sig-a, replay sig-b" in line
    assert compare_signature({}, "sig-a")[0] is None


def test_attempt_verdict_is_recorded_in_its_bundle(tmp_path: Path, cache: Path) -> None:
    from reprolab.replay import record_attempt_verdict

    directory = _bundle(tmp_path, cache)
    record_attempt_verdict(directory.parent, {"outcome": "reproduced", "title": "sysrq",
                                              "kind": "panic", "signature": "sig-a",
                                              "directory": "/not/recorded"})
    original = load_bundle(directory).original
    assert original == {"outcome": "reproduced", "title": "sysrq", "kind": "panic",
                        "signature": "sig-a"}
