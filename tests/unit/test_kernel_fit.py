"""A guest with more vCPUs than its kernel brings up is refused before boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.fit import check_vcpus, max_cpus


def _kernel(tmp_path: Path, config: str | None) -> KernelArtifacts:
    path = None
    if config is not None:
        path = tmp_path / "config"
        path.write_text(config)
    return KernelArtifacts(image=tmp_path / "bzImage", release="6.12.117", modules_root=tmp_path,
                           config=path, vmlinux=None, key="build-6.12-test", origin="build")


def test_tinyconfig_limit_refuses_a_third_vcpu(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "CONFIG_SMP=y\nCONFIG_NR_CPUS=2\n")
    assert max_cpus(kernel) == 2
    check_vcpus(kernel, 2, where="test case t: guest")
    with pytest.raises(UserError) as err:
        check_vcpus(kernel, 3, where="test case t: guest")
    message = str(err.value)
    assert "\n" not in message
    assert "vcpus=3" in message and "at most 2" in message and "CONFIG_NR_CPUS=3" in message
    assert message.startswith("test case t: guest")


def test_larger_limit_and_uniprocessor(tmp_path: Path) -> None:
    check_vcpus(_kernel(tmp_path, "CONFIG_SMP=y\nCONFIG_NR_CPUS=8\n"), 3, where="w")
    up = _kernel(tmp_path, "# CONFIG_SMP is not set\n")
    assert max_cpus(up) == 1
    with pytest.raises(UserError, match="CONFIG_SMP=y"):
        check_vcpus(up, 2, where="w")


def test_unknown_config_is_not_refused(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, None)
    assert max_cpus(kernel) is None
    check_vcpus(kernel, 64, where="w")
