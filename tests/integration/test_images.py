"""Both image kinds boot under libvirt with the stock kernel and do real work over SSH.

Guests are started by tests/integration/_imagehost.py (a transient domain of their own), so
these tests exercise the images and the SSH layer independently of the core's guest code.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from _imagehost import boot, check_no_leftovers, wait_marker

from reprolab.errors import InfraError
from reprolab.image.build import GuestImage, build_image
from reprolab.image.recipe import load_recipe
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.ssh import SshChannel, generate_keypair

pytestmark = pytest.mark.vm

RT_COMMANDS = [
    "chrt -f 50 true",
    "taskset -c 0 true",
    "stress-ng --cpu 1 -t 2",
    "cyclictest -l 100 -q",
]


#: SIGKILL after this long: a kvm-hello run that has not printed by then is stuck.
KVM_HELLO_LIMIT_S = 40


def kvm_hello(channel: SshChannel) -> str:
    """kvm-hello's output, with one more run if the first did not succeed.

    Under TCG's nested SVM a kvm-hello run was seen once (in a full CI run) never to come
    back from KVM_RUN within 60 s; a fresh process then works. That hazard is TCG's, not the
    image's: the stuck run is killed (SIGKILL: the SSH server then reports no exit status)
    and warned about, and a second failure fails the test.
    """
    cmd = f"timeout -s KILL {KVM_HELLO_LIMIT_S} kvm-hello"
    first = channel.run(cmd, timeout=KVM_HELLO_LIMIT_S + 20)
    if first.ok:
        return first.stdout
    warnings.warn(f"kvm-hello failed under TCG (nested SVM), status {first.rc} "
                  f"{first.stderr.strip()!r}; one more run", stacklevel=2)
    return channel.run(cmd, timeout=KVM_HELLO_LIMIT_S + 20).check().stdout


@pytest.fixture(scope="module")
def kernel() -> KernelArtifacts:
    return stock_kernel()


@pytest.fixture(scope="module", autouse=True)
def no_leftover_domains() -> Iterator[None]:
    yield
    check_no_leftovers()


def image(name: str, kernel: KernelArtifacts) -> GuestImage:
    return build_image(name, kernel)


@pytest.mark.parametrize("name", ["tools", "tools-disk"])
def test_tools_over_ssh_and_console(name: str, kernel: KernelArtifacts) -> None:
    img = image(name, kernel)
    with boot(img, kernel) as guest:
        assert guest.ssh is not None
        for cmd in RT_COMMANDS:
            result = guest.ssh.run(cmd, timeout=120)
            assert result.rc == 0, (cmd, result.stdout, result.stderr)
        assert "T: 0" in guest.ssh.run(["cyclictest", "-l", "100", "-q"], timeout=120).stdout
        assert kvm_hello(guest.ssh).strip() == "kvm-hello: ok"
        # argv lists are quoted: the guest sees one argument with a space and a quote in it.
        echoed = guest.ssh.run(["printf", "%s|", "a b", "it's"], check=True).stdout
        assert echoed == "a b|it's|"
        assert "cgroup2" in guest.ssh.run("cat /proc/mounts", check=True).stdout
        status, out = guest.console_run("uname -r; id -u")
        assert status == 0
        assert out.split()[-2:] == [kernel.release, "0"]
        # The serial shell comes back after it exits (respawned by init / getty).
        guest.console_send("exit")
        status, out = guest.console_run("echo again", timeout=120)
        assert (status, out.split()[-1]) == (0, "again")


def test_put_copies_bytes(tmp_path: Path, kernel: KernelArtifacts) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 64)
    with boot(image("tools", kernel), kernel) as guest:
        assert guest.ssh is not None
        guest.ssh.put(payload, "/tmp/payload.bin", mode=0o700)
        out = guest.ssh.run("sha256sum /tmp/payload.bin; stat -c %a /tmp/payload.bin").stdout
        assert out.split()[0] == hashlib.sha256(payload.read_bytes()).hexdigest()
        assert out.split()[-1] == "700"


def test_two_guests_side_by_side(kernel: KernelArtifacts) -> None:
    img = image("tools", kernel)
    with boot(img, kernel) as one, boot(img, kernel) as two:
        assert one.port != two.port
        assert one.ssh is not None and two.ssh is not None
        assert one.ssh.run("echo one").stdout == "one\n"
        assert two.ssh.run("echo two").stdout == "two\n"


def test_minimal_console_and_sysrq_panic(kernel: KernelArtifacts) -> None:
    img = image("minimal", kernel)
    assert not img.has_ssh and img.host_key is None
    with boot(img, kernel, ssh=False) as guest:
        assert guest.ssh is None
        status, out = guest.console_run("cat /proc/sys/kernel/sysrq; ls /sys/firmware")
        assert status == 0 and out.split()[0] == "1"
        assert "qemu_fw_cfg" in out
        guest.console_send("echo c > /proc/sysrq-trigger")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "Kernel panic" not in guest.console_text():
            time.sleep(0.2)
        assert "Kernel panic - not syncing: sysrq triggered crash" in guest.console_text()


def test_unreachable_guest_reports_console_tail(tmp_path: Path, kernel: KernelArtifacts) -> None:
    """The minimal image runs no sshd: waiting for it must fail with what the guest said."""
    img = image("minimal", kernel)
    tools = image("tools", kernel)
    with boot(img, kernel, ssh=False) as guest:
        key, _ = generate_keypair(tmp_path / "k")
        assert tools.host_key is not None
        chan = SshChannel("127.0.0.1", guest.port, key, tools.host_key)
        with pytest.raises(InfraError, match="not reachable") as info:
            chan.wait_ready(timeout=5, console_log=guest.console_log)
        assert info.value.detail is not None and img.ready_marker in info.value.detail


def test_disk_reboots_and_keeps_base_unchanged(kernel: KernelArtifacts) -> None:
    img = image("tools-disk", kernel)
    assert img.disk is not None and img.cmdline[:2] == ("root=/dev/vda", "rw")
    before = (img.disk.stat().st_size, img.disk.stat().st_mtime_ns)
    with boot(img, kernel) as guest:
        assert guest.ssh is not None
        guest.ssh.run("echo kept > /root/mark && sync", check=True)
        assert guest.ssh.run("cat /proc/1/comm", check=True).stdout.strip() == "systemd"
        guest.ssh.run("systemctl reboot")
        guest.ssh.close()
        wait_marker(guest.console_log, img.ready_marker, 240, guest.dom, count=2)
        guest.ssh.wait_ready(timeout=60, console_log=guest.console_log)
        assert guest.ssh.run("cat /root/mark", check=True).stdout == "kept\n"
    assert (img.disk.stat().st_size, img.disk.stat().st_mtime_ns) == before


def test_second_build_is_a_cache_hit(kernel: KernelArtifacts) -> None:
    first = build_image("tools", kernel)
    again = build_image("tools", kernel)
    assert again.cached and again.key == first.key and again.initrd == first.initrd
    disk_again = build_image("tools-disk", kernel)
    assert disk_again.cached


CUSTOM_RECIPE = """\
name: custom-cg1
kind: initramfs
packages:
  - busybox-static
  - dropbear-bin
ssh: true
cgroup_v1:
  - cpu
  - cpuset
sysctls:
  kernel.panic: "7"
files:
  - path: /etc/rl-note
    content: "hello from the recipe\\n"
init:
  - echo from-init-step > /run/rl-step
"""


def test_recipe_sysctls_files_init_steps_and_cgroup_v1(
    tmp_path: Path, kernel: KernelArtifacts
) -> None:
    path = tmp_path / "custom-cg1.yaml"
    path.write_text(CUSTOM_RECIPE)
    img = build_image(load_recipe(path), kernel)
    with boot(img, kernel) as guest:
        assert guest.ssh is not None
        mounts = guest.ssh.run("cat /proc/mounts", check=True).stdout
        assert "/sys/fs/cgroup/cpu cgroup" in mounts
        assert "/sys/fs/cgroup/cpuset cgroup" in mounts
        assert "cgroup2" not in mounts
        out = guest.ssh.run(
            "cat /proc/sys/kernel/panic /etc/rl-note /run/rl-step", check=True
        ).stdout
        assert out.splitlines() == ["7", "hello from the recipe", "from-init-step"]
