"""Image builder pieces against the real host: dpkg, ldd, modules.dep, cpio, qemu-img.

No guest boots here; tests/integration/test_images.py boots what these build.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.image import closure, guestinit, kmods
from reprolab.image.build import build_image, image_key, make_overlay
from reprolab.image.recipe import load_recipe
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("REPROLAB_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def kernel() -> KernelArtifacts:
    return stock_kernel()


def recipe_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def fake_kernel(tmp_path: Path, dep: str, builtin: str = "") -> KernelArtifacts:
    mods = tmp_path / "kroot" / "lib" / "modules" / "9.9.9-test"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text(dep)
    (mods / "modules.builtin").write_text(builtin)
    return KernelArtifacts(
        image=tmp_path / "bzImage", release="9.9.9-test", modules_root=tmp_path / "kroot",
        config=None, vmlinux=None, key="fake", origin="build",
    )


def test_unknown_package_names_recipe_line(tmp_path: Path) -> None:
    path = recipe_file(
        tmp_path, "name: x\nkind: initramfs\npackages:\n  - kmod\n  - no-such-package-rl\n"
    )
    with pytest.raises(UserError, match=r"r\.yaml:5: unknown Debian package 'no-such-package-rl'"):
        closure.package_versions(load_recipe(path))


def test_known_but_missing_package_says_install(tmp_path: Path) -> None:
    # 'sl' (the steam locomotive) exists in Debian and is never part of a build host.
    path = recipe_file(tmp_path, "name: x\nkind: initramfs\npackages:\n  - sl\n")
    installed = subprocess.run(["dpkg-query", "-W", "sl"], capture_output=True, check=False)
    if installed.returncode == 0:
        pytest.skip("the package 'sl' happens to be installed on this host")
    with pytest.raises(UserError, match=r"r\.yaml:4: package 'sl' is not installed.*apt-get"):
        closure.package_versions(load_recipe(path))


def test_unknown_module_names_recipe_line(tmp_path: Path, kernel: KernelArtifacts) -> None:
    path = recipe_file(
        tmp_path, "name: x\nkind: initramfs\nmodules:\n  - virtio_net\n  - virtio_nett\n"
    )
    recipe = load_recipe(path)
    with pytest.raises(UserError, match=r"r\.yaml:5: unknown kernel module 'virtio_nett'"):
        kmods.resolve(kernel, recipe.modules, recipe=recipe)


def test_disk_recipe_checked_before_building(tmp_path: Path, kernel: KernelArtifacts) -> None:
    from reprolab.image.build import validate

    path = recipe_file(tmp_path, "name: x\nkind: disk\npackages:\n  - stress-ngg\n")
    with pytest.raises(UserError, match=r"r\.yaml:4: unknown Debian package 'stress-ngg'"):
        validate(load_recipe(path), kernel)
    path = recipe_file(tmp_path, "name: x\nkind: disk\nmodules:\n  - ext5\n")
    with pytest.raises(UserError, match=r"r\.yaml:4: unknown kernel module 'ext5'"):
        validate(load_recipe(path), kernel)


def test_stock_modules_resolve_with_dependencies(kernel: KernelArtifacts) -> None:
    mods = kmods.resolve(kernel, ("virtio_net", "pvpanic_pci", "qemu_fw_cfg"))
    names = {kmods.module_name(f) for f in mods.files}
    assert {"virtio_net", "net_failover", "failover", "virtio", "virtio_ring"} <= names
    assert mods.load == ("virtio_net", "pvpanic_pci", "qemu_fw_cfg")


def test_builtin_and_compressed_modules(tmp_path: Path) -> None:
    kernel = fake_kernel(
        tmp_path,
        "kernel/a/foo-bar.ko.xz: kernel/a/dep.ko.zst\nkernel/a/dep.ko.zst:\n",
        "kernel/b/virtio_blk.ko\n",
    )
    mods = kmods.resolve(kernel, ("foo_bar", "virtio_blk"), optional=("absent",))
    assert mods.files == ("kernel/a/dep.ko.zst", "kernel/a/foo-bar.ko.xz")
    assert mods.load == ("foo_bar",)
    assert mods.builtin == ("virtio_blk",)


def test_missing_library_is_named(tmp_path: Path) -> None:
    src = tmp_path / "lib.c"
    src.write_text("int rl_answer(void) { return 42; }\n")
    prog = tmp_path / "prog.c"
    prog.write_text("int rl_answer(void);\nint main(void) { return rl_answer(); }\n")
    lib = tmp_path / "librlgone.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src], check=True)
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-o", exe, prog, f"-L{tmp_path}", "-lrlgone"], check=True)
    lib.unlink()
    with pytest.raises(UserError, match=r"tools\.yaml:9: .*prog needs librlgone\.so"):
        closure.library_closure(exe, where="images/tools.yaml:9")


def test_library_closure_of_a_real_program() -> None:
    libs = closure.library_closure(Path("/usr/bin/stress-ng"), where="x")
    assert any("libc.so" in lib for lib in libs)
    assert any("ld-linux" in lib for lib in libs)
    assert closure.library_closure(Path("/bin/busybox"), where="x") == []


def test_init_script_reflects_recipe(tmp_path: Path) -> None:
    path = recipe_file(
        tmp_path,
        "name: x\nkind: initramfs\nssh: true\ncgroup_v1:\n  - cpu\nsysctls:\n  kernel.panic: 3\n"
        "init:\n  - echo step-one\n",
    )
    rc = guestinit.initramfs_rc(load_recipe(path), ("virtio_net",))
    assert "mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu" in rc
    assert "cgroup2" not in rc
    assert "modprobe virtio_net" in rc
    assert "sysctl -q -w kernel.panic=3" in rc
    assert guestinit.FW_CFG_KEYS in rc and "dropbear" in rc
    assert rc.rstrip().endswith("echo step-one || echo \"reprolab-init: init step failed\" >&2")
    # The marker is the console shell's, printed once the rc is done (init runs sysinit
    # to its end before it spawns the respawn entries) and right before the shell reads.
    assert guestinit.READY_MARKER not in rc
    assert f"ttyS0::respawn:{guestinit.CONSOLE_SHELL_PATH}\n" in guestinit.INITTAB
    shell = guestinit.CONSOLE_SHELL.splitlines()
    assert shell[-2:] == [f"printf '\\n%s\\n' {guestinit.READY_MARKER} > /dev/console",
                          "exec /bin/sh -l"]


def _cpio_listing(initrd: Path) -> list[str]:
    data = subprocess.run(["zcat", initrd], capture_output=True, check=True).stdout
    out = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True)
    return out.stdout.decode().split()


def test_minimal_build_is_cached(cache: Path, kernel: KernelArtifacts) -> None:
    first = build_image("minimal", kernel)
    second = build_image("minimal", kernel)
    assert not first.cached and second.cached
    assert first.key == second.key and first.initrd == second.initrd
    assert first.initrd is not None and first.initrd.is_relative_to(cache)
    listing = _cpio_listing(first.initrd)
    assert "init" in listing and "etc/inittab" in listing and "etc/reprolab/rc" in listing
    assert guestinit.CONSOLE_SHELL_PATH.lstrip("/") in listing
    assert any(p.endswith("pvpanic-pci.ko") for p in listing)
    assert any(p.endswith("modules.dep.bin") for p in listing)
    meta = json.loads((first.initrd.parent / "image.json").read_text())
    assert meta["kind"] == "initramfs" and meta["host_key"] is None
    assert first.shell_at_ready and meta["shell_at_ready"] is True


def _build_in_child(cache: str, queue: multiprocessing.Queue[tuple[bool, str]]) -> None:
    import os

    os.environ["REPROLAB_CACHE"] = cache
    image = build_image("minimal", stock_kernel())
    queue.put((image.cached, image.key))


def test_parallel_builders_build_once(cache: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[bool, str]] = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(cache), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = [queue.get(timeout=5) for _ in procs]
    assert len({key for _, key in results}) == 1
    assert sorted(cached for cached, _ in results) == [False, True, True]


def test_key_depends_on_kernel_and_recipe(kernel: KernelArtifacts) -> None:
    recipe = load_recipe("minimal")
    base = image_key(recipe, kernel)
    assert image_key(recipe, kernel) == base
    assert image_key(recipe, replace(kernel, key="other")) != base
    assert image_key(replace(recipe, sysctls=(("kernel.panic", "1"),)), kernel) != base


def test_overlay_backed_by_base(tmp_path: Path, cache: Path, kernel: KernelArtifacts) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"], check=True)
    image = replace(build_image("minimal", kernel), kind="disk", disk=base)
    overlay = make_overlay(image, tmp_path / "run")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", overlay], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base.resolve())
    assert overlay.stat().st_mode & 0o777 == 0o660


def test_overlay_of_initramfs_is_user_error(cache: Path, kernel: KernelArtifacts) -> None:
    with pytest.raises(UserError, match="no disk"):
        make_overlay(build_image("minimal", kernel), Path("/nonexistent"))
