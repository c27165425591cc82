"""Fragments, merging, and the explanation of an option that did not land.

The Kconfig tree here is a miniature written for the test, shaped like the real cases the
issue names: LKDTM inside ``if RUNTIME_TESTING_MENU``, TMPFS depending on SHMEM, a
promptless symbol only a select sets, and a choice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.kernel import kconfig
from reprolab.kernel.config import (
    Request,
    builtin_fragment,
    conjuncts,
    explain,
    fragments_for,
    input_hash,
    merge,
    parse_fragment,
    verify,
)
from reprolab.kernel.spec import BuildSpec

KCONFIG = {
    "Kconfig": 'mainmenu "Linux/$(ARCH) Kernel"\n\nsource "arch/$(SRCARCH)/Kconfig"\n'
               'source "lib/Kconfig.debug"\nsource "fs/Kconfig"\n',
    "arch/x86/Kconfig": "config X86\n\tdef_bool y\n\tselect HAVE_BUDDY\n\n"
                        "config HAVE_BUDDY\n\tbool\n",
    "lib/Kconfig.debug": """
config DEBUG_FS
    bool "Debug filesystem"
    help
      Some help text that mentions config FAKE_IN_HELP and
      depends on NOTHING, which must not be parsed.

      A second paragraph.

menuconfig RUNTIME_TESTING_MENU
    bool "Runtime testing"

if RUNTIME_TESTING_MENU

config LKDTM
    tristate "Linux Kernel Dump Test Tool Module"
    depends on DEBUG_FS
    select STACKTRACE if X86

endif # RUNTIME_TESTING_MENU

config STACKTRACE
    bool

menu "Debug info"
    depends on DEBUG_KERNEL

choice
    prompt "Debug info format"
config DWARF4
    bool "DWARF 4"
config DWARF5
    bool "DWARF 5" \\
      if CC_VERSION >= 110000
endchoice

endmenu

config DEBUG_KERNEL
    bool "Kernel debugging"
""",
    "fs/Kconfig": 'config SHMEM\n\tbool "shmem"\n\nconfig TMPFS\n\tbool "tmpfs"\n'
                  "\tdepends on SHMEM && (X86 || ARM) # trailing comment\n",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel, text in KCONFIG.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "final.config"
    path.write_text(text)
    return path


def test_index_follows_source_if_menu_and_skips_help(tree: Path) -> None:
    index = kconfig.load(tree)
    assert {"X86", "DEBUG_FS", "LKDTM", "TMPFS", "DWARF5"} <= set(index.defs)
    assert "FAKE_IN_HELP" not in index.defs
    (lkdtm,) = index.defs["LKDTM"]
    assert [c.expr for c in lkdtm.conditions] == ["RUNTIME_TESTING_MENU", "DEBUG_FS"]
    assert lkdtm.has_prompt and not lkdtm.in_choice
    (dwarf5,) = index.defs["DWARF5"]
    assert dwarf5.in_choice
    assert [c.expr for c in dwarf5.conditions] == ["DEBUG_KERNEL"]
    assert not index.defs["STACKTRACE"][0].has_prompt
    assert index.selected_by["STACKTRACE"] == [("LKDTM", "X86")]
    assert index.defs["TMPFS"][0].conditions[0].expr == "SHMEM && (X86 || ARM)"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("A && B", 1),
        ("A || N", 2),
        ("!A", 0),
        ("!N && (B || N)", 1),
        ('S = "hello"', 2),
        ("V >= 110000", 2),
        ("V < 100", 0),
        ("$(success,true) && A", None),
        ("A &&", None),
    ],
)
def test_evaluate_tristate_logic(expr: str, expected: int | None) -> None:
    values = {"A": "y", "B": "m", "N": "n", "S": "hello", "V": "120200"}
    assert kconfig.evaluate(expr, values) == expected


def test_conjuncts_split_only_at_top_level() -> None:
    assert conjuncts("HAS_IOMEM && (ACPI || OF) && PVPANIC") == [
        "HAS_IOMEM", "ACPI || OF", "PVPANIC"
    ]
    assert conjuncts("((A && B))") == ["A && B"]
    assert conjuncts("(A) || (B)") == ["(A) || (B)"]


def test_missing_dependency_names_the_option_and_the_culprit(tree: Path) -> None:
    index = kconfig.load(tree)
    final = _config(
        tree, "CONFIG_X86=y\nCONFIG_DEBUG_FS=y\n# CONFIG_RUNTIME_TESTING_MENU is not set\n"
    )
    problems = verify(final, [Request("LKDTM", "y", "reprolab.config:40")], index)
    assert len(problems) == 1
    line = problems[0]
    assert line.startswith("CONFIG_LKDTM=y (reprolab.config:40) did not land, got n:")
    assert (
        "unmet dependency RUNTIME_TESTING_MENU [if RUNTIME_TESTING_MENU (lib/Kconfig.debug:"
        in line
    )
    assert "DEBUG_FS" not in line.split("got n:")[1]


def test_tmpfs_without_shmem(tree: Path) -> None:
    index = kconfig.load(tree)
    values = {"X86": "y"}
    why = explain(Request("TMPFS", "y", "f:1"), values, index)
    assert why.startswith("unmet dependency SHMEM [depends on SHMEM && (X86 || ARM)")


def test_typo_is_reported_as_unknown(tree: Path) -> None:
    final = _config(tree, "CONFIG_X86=y\n")
    (problem,) = verify(final, [Request("LKDTMM", "y", "frag.config:3")], kconfig.load(tree))
    assert "CONFIG_LKDTMM=y (frag.config:3)" in problem
    assert "no such option" in problem


def test_module_only_and_promptless_and_forced(tree: Path) -> None:
    index = kconfig.load(tree)
    values = {"X86": "y", "DEBUG_FS": "m", "RUNTIME_TESTING_MENU": "y", "LKDTM": "m"}
    assert explain(Request("LKDTM", "y", "f:1"), values, index).startswith(
        "limited to m by DEBUG_FS"
    )
    assert "no prompt" in explain(Request("STACKTRACE", "y", "f:2"), values, index)
    assert "forced on by select from CONFIG_LKDTM" in explain(
        Request("STACKTRACE", "n", "f:3"), values, index
    )


def test_satisfied_requests_pass(tree: Path) -> None:
    final = _config(tree, "CONFIG_X86=y\nCONFIG_SHMEM=y\nCONFIG_TMPFS=y\nCONFIG_V=0x10\n")
    requests = [Request("TMPFS", "y", "a:1"), Request("DEBUG_FS", "n", "a:2"),
                Request("V", "16", "a:3")]
    assert verify(final, requests, kconfig.load(tree)) == []


def test_merge_later_fragment_wins_and_base_lines_are_replaced(tmp_path: Path) -> None:
    base = _config(tmp_path, "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n")
    one = tmp_path / "one.config"
    one.write_text("# why A\n# CONFIG_A is not set\nCONFIG_B=m\n")
    two = tmp_path / "two.config"
    two.write_text("CONFIG_B=y\nCONFIG_CMDLINE=\"console=ttyS0\"\nCONFIG_NR=8\n")
    dest = tmp_path / ".config"
    requests = merge(base, [one, two], dest)
    assert [str(r) for r in requests] == [
        "CONFIG_A=n", "CONFIG_B=y", "CONFIG_CMDLINE=console=ttyS0", "CONFIG_NR=8"
    ]
    assert requests[1].origin == "two.config:1"
    assert dest.read_text().splitlines() == [
        'CONFIG_C="x"', "# CONFIG_A is not set", "CONFIG_B=y",
        'CONFIG_CMDLINE="console=ttyS0"', "CONFIG_NR=8",
    ]


def test_fragment_garbage_is_a_user_error(tmp_path: Path) -> None:
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_OK=y\nLKDTM=y\n")
    with pytest.raises(UserError, match=r"bad.config:2: not a config fragment line"):
        parse_fragment(frag)


def test_builtin_fragments_by_version_and_base() -> None:
    tiny = BuildSpec(source="linux-source-6.12")
    names = [p.name for p in fragments_for(tiny, (6, 12))]
    assert names == ["reprolab-tiny.config", "reprolab.config", "reprolab-buddy.config"]
    defconfig = BuildSpec(source="x", base_config="defconfig")
    names_61 = [p.name for p in fragments_for(defconfig, (6, 1))]
    assert names_61 == ["reprolab.config"]
    assert fragments_for(BuildSpec(source="x", reprolab_fragments=False), (6, 12)) == []


def test_input_hash_changes_with_any_input(tmp_path: Path) -> None:
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_A=y\n")
    spec = BuildSpec(source="x", fragments=(frag,))
    first = input_hash(spec, [frag])
    assert input_hash(BuildSpec(source="x", base_config="defconfig"), [frag]) != first
    frag.write_text("CONFIG_A=m\n")
    assert input_hash(spec, [frag]) != first


@pytest.mark.parametrize("name", ["reprolab", "reprolab-tiny", "reprolab-buddy"])
def test_every_builtin_option_says_why(name: str) -> None:
    """Each option line of reprolab's fragments sits under a comment explaining it."""
    lines = builtin_fragment(name).read_text().splitlines()
    assert parse_fragment(builtin_fragment(name))
    for number, line in enumerate(lines):
        if not re.match(r"^(CONFIG_|# CONFIG_\w+ is not set)", line):
            continue
        above = number - 1
        while above >= 0 and re.match(r"^(CONFIG_|# CONFIG_\w+ is not set)", lines[above]):
            above -= 1
        assert above >= 0 and lines[above].startswith("# "), f"{name}:{number + 1} {line}"


def test_reprolab_fragment_covers_the_issue_list() -> None:
    text = builtin_fragment("reprolab").read_text()
    for option in (
        "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD", "DEVTMPFS", "DEBUG_FS", "VIRTIO_PCI",
        "PRINTK_CALLER", "MAGIC_SYSRQ", "SOFTLOCKUP_DETECTOR", "HARDLOCKUP_DETECTOR",
        "DETECT_HUNG_TASK", "LKDTM", "RUNTIME_TESTING_MENU", "CFS_BANDWIDTH", "RT_GROUP_SCHED",
        "HOTPLUG_CPU", "KVM", "KVM_AMD", "KVM_INTEL", "PVPANIC_MMIO", "FW_CFG_SYSFS",
        "I6300ESB_WDT", "CRASH_DUMP", "DEBUG_INFO",
    ):
        assert f"CONFIG_{option}=y" in text, option
    assert "CONFIG_HARDLOCKUP_DETECTOR_BUDDY=y" in builtin_fragment("reprolab-buddy").read_text()


def test_distribution_key_files_missing_from_the_tree_are_emptied(tmp_path: Path) -> None:
    from reprolab.kernel.config import _drop_missing_key_files

    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "mine.pem").write_text("key")
    config = _config(tmp_path, 'CONFIG_SYSTEM_TRUSTED_KEYS="debian/certs/debian-uefi-certs.pem"\n'
                               'CONFIG_SYSTEM_REVOCATION_KEYS="certs/mine.pem"\nCONFIG_A=y\n')
    _drop_missing_key_files(config, tmp_path, tmp_path / "log")
    assert config.read_text().splitlines() == [
        'CONFIG_SYSTEM_TRUSTED_KEYS=""', 'CONFIG_SYSTEM_REVOCATION_KEYS="certs/mine.pem"',
        "CONFIG_A=y",
    ]
    assert "debian-uefi-certs.pem" in (tmp_path / "log").read_text()
