"""The kernel spec syntax: both forms, the canonical string, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.kernel.spec import STOCK, BuildSpec, KernelSpec, parse_kernel_spec


def test_stock() -> None:
    assert parse_kernel_spec("stock") is STOCK
    assert parse_kernel_spec("  stock ").is_stock
    assert parse_kernel_spec({"source": "stock"}) == STOCK
    assert str(STOCK) == "stock"


def test_debian_package_defaults_to_tinyconfig_with_reprolab_fragments() -> None:
    spec = parse_kernel_spec("build:linux-source-6.12")
    assert spec.build == BuildSpec(source="linux-source-6.12")
    assert spec.build.base_config == "tinyconfig"
    assert spec.build.reprolab_fragments
    assert str(spec) == "build:linux-source-6.12"


def test_tree_commit_and_keys(tmp_path: Path) -> None:
    spec = parse_kernel_spec(
        "build:/src/linux@v6.12-rc1+patches=series.d+config=defconfig"
        "+fragment=a.config+fragment=/abs/b.config",
        base_dir=tmp_path,
    )
    assert spec.build is not None
    assert spec.build.source == "/src/linux"
    assert spec.build.commit == "v6.12-rc1"
    assert spec.build.patches == tmp_path / "series.d"
    assert spec.build.base_config == "defconfig"
    assert spec.build.fragments == (tmp_path / "a.config", Path("/abs/b.config"))


def test_bare_plus_path_is_a_fragment_and_blanks_are_ignored(tmp_path: Path) -> None:
    spec = parse_kernel_spec("build:linux-source-6.12 + fragments/cfs.config", base_dir=tmp_path)
    assert spec.build is not None
    assert spec.build.fragments == (tmp_path / "fragments/cfs.config",)


def test_config_file_and_reprolab_off(tmp_path: Path) -> None:
    spec = parse_kernel_spec(
        "build:linux-source-6.1+config=/boot/config-6.1.0-56-amd64+reprolab=no"
    )
    assert spec.build is not None
    assert spec.build.base_config == Path("/boot/config-6.1.0-56-amd64")
    assert not spec.build.reprolab_fragments


@pytest.mark.parametrize(
    "text",
    [
        "build:/src/linux@abc123+patches=/p+config=defconfig+fragment=/f.config",
        "build:/tmp/linux-6.12.tar.xz+config=/boot/config-x+reprolab=no",
        "build:linux-source-6.12+fragment=/a+fragment=/b",
    ],
)
def test_canonical_string_round_trips(text: str) -> None:
    spec = parse_kernel_spec(text)
    assert parse_kernel_spec(str(spec)) == spec


def test_mapping_form(tmp_path: Path) -> None:
    spec = parse_kernel_spec(
        {
            "source": "/src/linux",
            "commit": "deadbeef",
            "patches": "p",
            "base_config": "tinyconfig",
            "fragments": ["x.config"],
        },
        base_dir=tmp_path,
    )
    assert spec == KernelSpec(
        build=BuildSpec(
            source="/src/linux",
            commit="deadbeef",
            patches=tmp_path / "p",
            fragments=(tmp_path / "x.config",),
        )
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("linux-source-6.12", "expected 'stock'"),
        ("build:", "no source"),
        ("build:linux-source-6.12+flavour=rt", "unknown key 'flavour'"),
        ("build:linux-source-6.12@v6.12", "needs a git tree"),
        ("build:/x/linux.tar.xz@abc", "needs a git tree"),
        ("build:/src@", "empty source or commit"),
        ("build:linux-source-6.12++", "empty item"),
        ("build:linux-source-6.12+patches=", "needs a value"),
        ("build:linux-source-6.12+patches=a+patches=b", "given twice"),
        ("build:linux-source-6.12+reprolab=maybe", "expected yes or no"),
    ],
)
def test_bad_strings_are_one_line_user_errors(text: str, needle: str) -> None:
    with pytest.raises(UserError) as info:
        parse_kernel_spec(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"src": "/x"}, "unknown key"),
        ({}, "'source' is required"),
        ({"source": "stock", "commit": "x"}, "takes no other keys"),
        ({"source": "/x", "reprolab_fragments": "yes"}, "must be true or false"),
    ],
)
def test_bad_mappings(data: dict[str, object], needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        parse_kernel_spec(data)
