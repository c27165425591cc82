"""`reprolab repro` without guests: loading cases, kernel overrides, bundles, the CLI's errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from reprolab.bisect.vm_oracle import boot_failed
from reprolab.cli import EXIT_USER, main
from reprolab.errors import BootTimeout, Failure, GuestDied, InfraError, UserError
from reprolab.image.build import GuestImage
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.spec import STOCK, parse_kernel_spec
from reprolab.replay import (
    at_commit,
    kernel_from_data,
    kernel_to_data,
    load_testcase,
    override_kernel,
    replay_plan,
    write_attempt_bundle,
)
from reprolab.run.attempt import AttemptResult
from reprolab.run.verdict import Outcome

CASE = '''
import pytest


@pytest.mark.reprolab(
    kernel="build:linux-source-6.12 + frag.config",
    guest={"vcpus": 1, "image": "minimal"},
    expect={"kind": "soft-lockup"},
    attempts=3,
)
def test_spin(guest):
    guest.calls.append("spin")


def test_plain():
    pass
'''


@pytest.fixture
def casefile(tmp_path: Path) -> Path:
    path = tmp_path / "cases" / "test_spin_case.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(CASE))
    (path.parent / "frag.config").write_text("CONFIG_SMP=y\n")
    return path


def test_load_by_file_finds_the_only_reprolab_function(casefile: Path) -> None:
    loaded = load_testcase(str(casefile))
    assert loaded.nodeid == f"{casefile}::test_spin"
    assert loaded.case.attempts == 3
    assert loaded.case.expect.kind == "soft-lockup"
    # Relative paths in the marker's kernel spec are the test file's.
    spec = loaded.kernel_spec()
    assert spec.build is not None
    assert spec.build.fragments == (casefile.parent / "frag.config",)

    class FakeGuest:
        def __init__(self) -> None:
            self.calls: list[str] = []

    guest = FakeGuest()
    loaded.body()(guest)  # type: ignore[arg-type]
    assert guest.calls == ["spin"]


def test_load_errors_name_what_to_fix(casefile: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a reprolab test case"):
        load_testcase(f"{casefile}::test_plain")
    with pytest.raises(UserError, match="does not exist"):
        load_testcase(f"{casefile}::test_nothing")
    with pytest.raises(UserError, match="does not exist"):
        load_testcase(str(tmp_path / "nope.py"))
    with pytest.raises(UserError, match="parametrised"):
        load_testcase(f"{casefile}::test_spin[1]")
    two = tmp_path / "test_two.py"
    two.write_text(textwrap.dedent(CASE) + textwrap.dedent('''
        @pytest.mark.reprolab(expect={"kind": "panic"})
        def test_other(guest, tmp_path):
            pass
    '''))
    with pytest.raises(UserError, match="2 reprolab test functions"):
        load_testcase(str(two))
    other = load_testcase(f"{two}::test_other")
    with pytest.raises(UserError, match="only 'guest'"):
        other.body()


def test_module_level_marker(tmp_path: Path) -> None:
    path = tmp_path / "test_module_mark.py"
    path.write_text(textwrap.dedent('''
        import pytest
        pytestmark = pytest.mark.reprolab(expect={"kind": "panic"}, attempts=2)

        def test_it(guest):
            pass
    '''))
    assert load_testcase(str(path)).case.attempts == 2


def test_override_kernel(tmp_path: Path) -> None:
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    frag = tmp_path / "more.config"
    frag.write_text("CONFIG_X=y\n")
    base = parse_kernel_spec("build:linux-source-6.12+fragment=/f/a.config")
    assert override_kernel(base) is base
    changed = override_kernel(base, patch=patch, config="defconfig", fragments=[frag])
    assert changed.build is not None
    assert changed.build.patches == patch
    assert changed.build.base_config == "defconfig"
    assert changed.build.fragments == (Path("/f/a.config"), frag)
    assert override_kernel(base, kernel="stock") == STOCK
    with pytest.raises(UserError, match="need a built kernel"):
        override_kernel(STOCK, patch=patch)
    with pytest.raises(UserError, match="--patch"):
        override_kernel(base, patch=tmp_path / "missing.patch")
    with pytest.raises(UserError, match="--config"):
        override_kernel(base, config="nosuchconfig")


def test_at_commit_keeps_the_recipe(tmp_path: Path) -> None:
    base = parse_kernel_spec("build:linux-source-6.12+config=defconfig+fragment=/f/a.config")
    spec = at_commit(base, tmp_path, "c" * 40)
    assert spec.build is not None
    assert (spec.build.source, spec.build.commit) == (str(tmp_path.resolve()), "c" * 40)
    assert spec.build.base_config == "defconfig"
    assert spec.build.fragments == (Path("/f/a.config"),)
    assert kernel_from_data(kernel_to_data(spec)) == spec
    assert kernel_from_data(kernel_to_data(STOCK)) == STOCK


def _kernel(tmp_path: Path, source_id: str) -> KernelArtifacts:
    entry = tmp_path / "kernels" / "build-6.12-abc"
    entry.mkdir(parents=True)
    (entry / "bzImage").write_bytes(b"kernel")
    (entry / "config").write_text("CONFIG_SMP=y\n")
    (entry / "meta.json").write_text(json.dumps({"source_id": source_id}))
    return KernelArtifacts(image=entry / "bzImage", release="6.12.0", modules_root=entry,
                           config=entry / "config", vmlinux=None, key=entry.name,
                           origin="build")


def test_bundle_round_trip_replays_the_built_commit(casefile: Path, tmp_path: Path) -> None:
    sha = "d" * 40
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    loaded = load_testcase(str(casefile))
    spec = override_kernel(at_commit(loaded.kernel_spec(), tmp_path, "HEAD"), patch=patch)
    image = GuestImage(recipe="minimal", kind="initramfs", initrd=None, disk=None, cmdline=(),
                       ready_marker="ready", host_key=None, has_ssh=False, key="img123")
    attempt = tmp_path / "attempt-001"
    attempt.mkdir()
    bundle = write_attempt_bundle(
        attempt, case=loaded.case, kernel_spec=spec, kernel=_kernel(tmp_path, f"git-{sha}"),
        image=image, cmdline="console=ttyS0,115200 panic=0", domain_xml="<domain/>",
    )
    assert bundle.commit == sha  # HEAD pinned to what was built
    assert bundle.image_recipe_hash == "minimal:img123"
    assert bundle.scenario["attempts"] == 3
    staging = tmp_path / "replay-inputs"
    plan = replay_plan(attempt, staging=staging)
    assert plan.loaded.case.name == loaded.case.name
    build = plan.kernel.build
    assert build is not None
    assert build.commit == sha
    # The build reads the replay's own verified copies, never the bundle directory.
    assert build.base_config == staging / "config"
    assert bundle.config is not None
    assert (staging / "config").read_bytes() == bundle.config.read_bytes()
    assert build.fragments == () and build.reprolab_fragments is False
    assert build.patches == staging / "patches"
    assert (staging / "patches" / "series").read_text() == "0001.patch\n"
    assert bundle.artifacts["kernel"]["key"] == "build-6.12-abc"
    assert bundle.artifacts["kernel"]["image_sha256"].startswith("sha256:")
    assert bundle.testfile is not None and bundle.testfile_hash is not None


def test_boot_failure_is_told_from_other_infra_errors(tmp_path: Path) -> None:
    def result(error: InfraError) -> AttemptResult:
        return AttemptResult("c", 1, Outcome.INFRA_ERROR, tmp_path, "tcg",
                             failure=Failure.of(error))

    # The typed failure, never a note parsed back: the same message, another type.
    assert boot_failed(result(BootTimeout("guest did not come up")))
    assert not boot_failed(result(GuestDied("guest did not come up")))
    # Another crash before the ready marker: untestable; after it: an ordinary other crash.
    early = AttemptResult("c", 1, Outcome.OTHER_CRASH, tmp_path, "tcg", boot_seconds=None)
    late = AttemptResult("c", 1, Outcome.OTHER_CRASH, tmp_path, "tcg", boot_seconds=3.0)
    assert boot_failed(early) and not boot_failed(late)
    hit = AttemptResult("c", 1, Outcome.REPRODUCED, tmp_path, "tcg", boot_seconds=None)
    assert not boot_failed(hit)


@pytest.mark.parametrize("argv, message", [
    (["repro"], "name a test case"),
    (["repro", "x.py", "--bundle", "."], "not both"),
    (["repro", "missing_case.py"], "does not exist"),
    (["repro", "--bundle", "/nonexistent-bundle"], "not a replay bundle"),
])
def test_cli_usage_errors(argv: list[str], message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USER
    assert message in capsys.readouterr().err


def test_cli_rejects_patching_the_stock_kernel(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    case = tmp_path / "test_stock_case.py"
    case.write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.reprolab(expect={"kind": "panic"})
        def test_stock(guest):
            pass
    '''))
    patch = tmp_path / "p.patch"
    patch.write_text("x")
    assert main(["repro", str(case), "--patch", str(patch)]) == EXIT_USER
    assert "need a built kernel" in capsys.readouterr().err
