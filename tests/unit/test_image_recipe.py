"""Recipe parsing: shipped recipes load, and every kind of mistake names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.image.recipe import images_dir, load_recipe


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["minimal", "tools", "tools-disk"])
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.path == (images_dir() / f"{name}.yaml").resolve()


def test_minimal_recipe_contents() -> None:
    recipe = load_recipe("minimal")
    assert recipe.kind == "initramfs"
    assert recipe.packages == ("busybox-static",)
    assert {"pvpanic", "pvpanic_pci", "qemu_fw_cfg", "i6300esb"} <= set(recipe.modules)
    assert not recipe.ssh


def test_tools_recipe_has_ssh_and_kvm_program() -> None:
    recipe = load_recipe("tools")
    assert recipe.ssh
    assert {"util-linux", "stress-ng", "rt-tests", "dropbear-bin"} <= set(recipe.packages)
    (kvm,) = [f for f in recipe.files if f.compile is not None]
    assert kvm.path == "/usr/local/bin/kvm-hello"
    assert kvm.mode == 0o755


def test_env_overrides_images_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: mine\nkind: initramfs\n", "mine.yaml")
    monkeypatch.setenv("REPROLAB_IMAGES", str(tmp_path))
    assert load_recipe("mine").name == "mine"


def test_unknown_name_lists_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: mine\nkind: initramfs\n", "mine.yaml")
    monkeypatch.setenv("REPROLAB_IMAGES", str(tmp_path))
    with pytest.raises(UserError, match=r"'nope' not found .*known: mine"):
        load_recipe("nope")


def test_typo_in_key_names_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\npakages:\n  - kmod\n")
    match = r"r\.yaml:3: unknown key 'pakages'.*did you mean 'packages'"
    with pytest.raises(UserError, match=match):
        load_recipe(path)


def test_wrong_type_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\nmodules: virtio_net\n")
    with pytest.raises(UserError, match=r"r\.yaml:3: modules must be a list"):
        load_recipe(path)


def test_wrong_scalar_type_in_list(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\npackages:\n  - kmod\n  - 12\n")
    with pytest.raises(UserError, match=r"r\.yaml:5: each entry of packages must be a non-empty"):
        load_recipe(path)


def test_bad_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: iso\n")
    with pytest.raises(UserError, match=r"r\.yaml:2: kind must be one of initramfs, disk"):
        load_recipe(path)


def test_missing_name(tmp_path: Path) -> None:
    path = write(tmp_path, "kind: disk\n")
    with pytest.raises(UserError, match=r"r\.yaml:1: missing required key 'name'"):
        load_recipe(path)


def test_ssh_must_be_bool(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\nssh: maybe\n")
    with pytest.raises(UserError, match=r"r\.yaml:3: ssh must be true or false"):
        load_recipe(path)


def test_invalid_yaml_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: [initramfs\n")
    with pytest.raises(UserError, match=r"r\.yaml:\d+: invalid YAML"):
        load_recipe(path)


def test_files_entry_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\nfiles:\n  - path: /a\n    source: no.c\n")
    with pytest.raises(UserError, match=r"r\.yaml:5: source file 'no.c' not found"):
        load_recipe(path)
    path = write(tmp_path, "name: x\nkind: initramfs\nfiles:\n  - path: rel\n    content: hi\n")
    with pytest.raises(UserError, match=r"r\.yaml:4: files path 'rel' must be absolute"):
        load_recipe(path)
    path = write(tmp_path, "name: x\nkind: initramfs\nfiles:\n  - path: /a\n")
    with pytest.raises(UserError, match=r"r\.yaml:4: a files entry needs exactly one of"):
        load_recipe(path)


def test_files_and_sysctls_parse(tmp_path: Path) -> None:
    (tmp_path / "p.c").write_text("int main(void){return 0;}\n")
    path = write(
        tmp_path,
        "name: x\nkind: initramfs\nsysctls:\n  kernel.panic: 5\n"
        "files:\n  - path: /etc/x\n    content: hi\n    mode: '0600'\n"
        "  - path: /bin/p\n    compile: p.c\ninit:\n  - echo hi\n",
    )
    recipe = load_recipe(path)
    assert recipe.sysctls == (("kernel.panic", "5"),)
    assert recipe.files[0].content == "hi" and recipe.files[0].mode == 0o600
    assert recipe.files[1].compile == (tmp_path / "p.c").resolve()
    assert recipe.init == ("echo hi",)
    assert recipe.where("sysctls", "kernel.panic").endswith("r.yaml:4")


def test_module_names_normalised_and_located(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\nmodules:\n  - pvpanic-pci\n")
    recipe = load_recipe(path)
    assert recipe.modules == ("pvpanic_pci",)
    assert recipe.where("modules", "pvpanic_pci").endswith("r.yaml:4")


def test_cgroup_v1_controller_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: initramfs\ncgroup_v1:\n  - cpu\n  - cpux\n")
    with pytest.raises(UserError, match=r"r\.yaml:5: unknown cgroup v1 controller 'cpux'"):
        load_recipe(path)


def test_disk_section(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nkind: disk\ndisk:\n  size: 3G\n  suite: trixie\n")
    recipe = load_recipe(path)
    assert recipe.disk.size == "3G" and recipe.disk.suite == "trixie"
    path = write(tmp_path, "name: x\nkind: disk\ndisk:\n  size: big\n")
    with pytest.raises(UserError, match=r"r\.yaml:4: disk size must look like"):
        load_recipe(path)
    path = write(tmp_path, "name: x\nkind: disk\ndisk:\n  sise: 3G\n")
    with pytest.raises(UserError, match=r"r\.yaml:4: unknown key 'sise' in disk"):
        load_recipe(path)


def test_recipes_are_frozen_and_comparable() -> None:
    a, b = load_recipe("tools"), load_recipe("tools")
    assert a == b
    with pytest.raises(AttributeError):
        a.name = "other"  # type: ignore[misc]
