"""Domain XML rendering: what libvirt is asked to build, checked with XPath."""

from pathlib import Path

import pytest
from lxml import etree

from reprolab.errors import UserError
from reprolab.guest.spec import GuestOptions, GuestSpec, Watchdog, merge_cmdline, parse_memory
from reprolab.virt.domain_xml import QEMU_NS, console_socket_of, render_domain_xml
from reprolab.virt.metadata import NS, RunTag


def _xml(**kw: object) -> etree._Element:
    spec = GuestSpec(kernel=Path("/var/lib/k"), initrd=Path("/var/lib/i"), **kw)  # type: ignore[arg-type]
    text = render_domain_xml(spec, name="rl-x", tag=RunTag.current("t::x"),
                             serial_log=Path("/var/lib/s.log"))
    return etree.fromstring(text.encode())


def test_direct_kernel_boot_and_tcg() -> None:
    root = _xml(cmdline=merge_cmdline({"console": "ttyS0", "panic": 0}))
    assert root.get("type") == "qemu"
    assert root.findtext("os/kernel") == "/var/lib/k"
    assert root.findtext("os/initrd") == "/var/lib/i"
    assert root.findtext("os/cmdline") == "console=ttyS0 panic=0"
    assert root.find("features/vmcoreinfo").get("state") == "on"
    assert root.findtext("on_crash") == "preserve"


def test_kvm_accel_renders_kvm_type() -> None:
    assert _xml(accel="kvm").get("type") == "kvm"


def test_serial_console_keeps_a_log_copy() -> None:
    root = _xml()
    assert root.find("devices/serial/log").get("file") == "/var/lib/s.log"
    assert root.find("devices/console/target").get("type") == "serial"


def test_console_on_a_socket_keeps_its_log_and_is_found_again() -> None:
    """A local guest's console is a socket QEMU listens on (read without virsh console);
    a restored domain's XML, the saved one, names the same socket."""
    spec = GuestSpec(kernel=Path("/var/lib/k"), initrd=None)
    text = render_domain_xml(spec, name="rl-x", serial_log=Path("/var/lib/s.log"),
                             console_socket=Path("/var/lib/run/ab.console.sock"))
    root = etree.fromstring(text.encode())
    for dev in ("serial", "console"):
        assert root.find(f"devices/{dev}").get("type") == "unix"
        source = root.find(f"devices/{dev}/source")
        assert (source.get("mode"), source.get("path")) == ("bind",
                                                            "/var/lib/run/ab.console.sock")
    assert root.find("devices/serial/log").get("file") == "/var/lib/s.log"
    assert console_socket_of(text) == Path("/var/lib/run/ab.console.sock")


def test_a_pty_console_names_no_socket() -> None:
    text = render_domain_xml(GuestSpec(kernel=Path("/var/lib/k"), initrd=None), name="rl-x")
    assert etree.fromstring(text.encode()).find("devices/serial").get("type") == "pty"
    assert console_socket_of(text) is None


def test_nested_requires_svm_on_qemu64() -> None:
    root = _xml(nested=True)
    feat = root.find("cpu/feature")
    assert root.findtext("cpu/model") == "qemu64"
    assert (feat.get("name"), feat.get("policy")) == ("svm", "require")
    assert _xml(nested=False).find("cpu/feature") is None


def test_panic_and_watchdog_devices() -> None:
    root = _xml(watchdog=Watchdog(action="pause"))
    assert root.find("devices/panic").get("model") == "isa"
    wd = root.find("devices/watchdog")
    assert (wd.get("model"), wd.get("action")) == ("i6300esb", "pause")
    assert _xml(panic_device="none").find("devices/panic") is None


def test_ssh_forward_is_loopback_only_and_restricted() -> None:
    root = _xml(ssh_port=40022, fw_cfg=(("opt/reprolab/authorized_keys", Path("/var/ak")),))
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    netdev = args[args.index("-netdev") + 1]
    assert "restrict=on" in netdev
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "name=opt/reprolab/authorized_keys,file=/var/ak" in args


def test_no_network_without_ssh() -> None:
    assert list(_xml().iter(f"{{{QEMU_NS}}}arg")) == []


def test_metadata_tags_owner() -> None:
    root = _xml()
    run = root.find(f"metadata/{{{NS}}}run")
    tag = RunTag.from_xml(etree.tostring(run).decode())
    assert tag is not None and tag.test == "t::x" and tag.owner_alive() is True


def test_special_characters_are_escaped() -> None:
    spec = GuestSpec(kernel=Path("/var/a&b<c>"), cmdline=(("x", "'\"&"),))
    root = etree.fromstring(render_domain_xml(spec, name="n").encode())
    assert root.findtext("os/kernel") == "/var/a&b<c>"
    assert root.findtext("os/cmdline") == "x='\"&"


def test_merge_cmdline_later_layer_wins_and_false_removes() -> None:
    merged = merge_cmdline({"console": "ttyS0", "panic": 0, "quiet": True},
                           {"panic": 10, "quiet": False, "nmi_watchdog": "panic"})
    assert merged == (("console", "ttyS0"), ("panic", "10"), ("nmi_watchdog", "panic"))


@pytest.mark.parametrize(("text", "mib"), [("512M", 512), ("1G", 1024), ("2GiB", 2048),
                                           (768, 768), ("1024", 1024)])
def test_parse_memory(text: str | int, mib: int) -> None:
    assert parse_memory(text) == mib


@pytest.mark.parametrize("bad", ["lots", "12", "-1G", "1.5G"])
def test_parse_memory_rejects(bad: str) -> None:
    with pytest.raises(UserError):
        parse_memory(bad)


def test_guest_options_reject_unknown_keys() -> None:
    with pytest.raises(UserError, match="unknown guest key 'vcpu'"):
        GuestOptions.from_mapping({"vcpu": 2}, where="t")
    opts = GuestOptions.from_mapping({"vcpus": 4, "memory": "1G", "watchdog": True}, where="t")
    assert (opts.vcpus, opts.memory_mib, opts.watchdog) == (4, 1024, Watchdog())


def test_cpu_features_render_require_and_disable_in_order() -> None:
    root = _xml(cpu_features=(("movbe", "require"), ("x2apic", "disable")))
    feats = [(f.get("name"), f.get("policy")) for f in root.findall("cpu/feature")]
    assert feats == [("movbe", "require"), ("x2apic", "disable")]
    assert root.findtext("cpu/model") == "qemu64"


def test_cpu_features_with_nested_keep_svm_once() -> None:
    root = _xml(nested=True, cpu_features=(("svm", "require"), ("movbe", "disable")))
    feats = [(f.get("name"), f.get("policy")) for f in root.findall("cpu/feature")]
    assert feats == [("svm", "require"), ("movbe", "disable")]
    root = _xml(nested=True, cpu_features=(("movbe", "require"),))
    feats = [(f.get("name"), f.get("policy")) for f in root.findall("cpu/feature")]
    assert feats == [("svm", "require"), ("movbe", "require")]


def test_cpu_features_on_host_passthrough() -> None:
    root = _xml(cpu_model="host", cpu_features=(("movbe", "disable"),))
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("cpu/feature").get("name") == "movbe"


def test_cpu_features_option_parses_signs() -> None:
    opts = GuestOptions.from_mapping({"cpu_features": ["+movbe", "-x2apic", "+sse4.2"]},
                                     where="t")
    assert opts.cpu_features == (("movbe", "require"), ("x2apic", "disable"),
                                 ("sse4.2", "require"))
    assert GuestOptions.from_mapping({"cpu_features": "-movbe"}, where="t").cpu_features == (
        ("movbe", "disable"),)
    assert GuestOptions.from_mapping({}, where="t").cpu_features == ()


@pytest.mark.parametrize("bad", [["movbe"], ["+"], ["+Mov be"], ["+movbe", "-movbe"],
                                 {"movbe": True}, [3], ["+a;b"]])
def test_cpu_features_option_rejects_bad_input_in_one_line(bad: object) -> None:
    # One problem line: the test, the key and value, then what is allowed.
    with pytest.raises(UserError, match=r"^t: guest\.cpu_features=.*: guest cpu_features") as err:
        GuestOptions.from_mapping({"cpu_features": bad}, where="t")
    assert "\n" not in str(err.value)


def test_cpu_features_cannot_take_away_the_nested_flag() -> None:
    with pytest.raises(UserError, match="disables svm, which nested"):
        GuestSpec(kernel=Path("/k"), nested=True, cpu_features=(("svm", "disable"),))
