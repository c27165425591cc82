"""Render a :class:`GuestSpec` to libvirt domain XML.

Built with lxml rather than string templates so that paths and command lines with quotes or
ampersands cannot break the document, and so tests can query the result with XPath.
Options libvirt 9.0 has no element for (user-mode networking with a host forward on
loopback, fw_cfg items) go through ``<qemu:commandline>``; libvirt marks such a domain
"tainted", which is acceptable for a throwaway reproduction guest.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from reprolab.virt.machine import GuestSpec, nested_flag
from reprolab.virt.metadata import RunTag

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, {k: v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def render_domain_xml(
    spec: GuestSpec,
    *,
    name: str,
    tag: RunTag | None = None,
    serial_log: Path | None = None,
    emulator: str | None = None,
    console_socket: Path | None = None,
) -> str:
    """Return the domain XML for ``spec``.

    ``serial_log`` is where libvirt's virtlogd keeps its own copy of the serial console:
    it holds what the guest printed before anyone attached, and survives the runner.
    ``console_socket``: the serial console is a unix socket QEMU listens on there (the
    harness connects to it directly, on the host QEMU runs on) instead of a pty read through
    ``virsh console``. QEMU 7.2 notices a pty's reader only at a poll it runs once a second
    while the guest is silent, so the first command typed into a restored guest, idle at its
    prompt, waited up to a second; a socket's reader is accepted at once.
    """
    root = etree.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu",
                         nsmap={"qemu": QEMU_NS})
    _sub(root, "name", name)
    if tag is not None:
        _sub(root, "metadata").append(tag.to_element())
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))

    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", str(spec.kernel))
    if spec.initrd is not None:
        _sub(os_el, "initrd", str(spec.initrd))
    _sub(os_el, "cmdline", spec.cmdline_text())

    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    # Publishes the guest's vmcoreinfo through fw_cfg so memory-only dumps are readable.
    _sub(features, "vmcoreinfo", state="on")

    _render_cpu(root, spec)
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    # A guest reboot is an event in its own right ("unexpected reboot"): keep it observable.
    _sub(root, "on_reboot", "restart")
    # pvpanic: keep the crashed guest in memory so it can be dumped.
    _sub(root, "on_crash", "preserve")

    devices = _sub(root, "devices")
    if emulator:
        _sub(devices, "emulator", emulator)
    if spec.disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", cache="unsafe")
        _sub(disk, "source", file=str(spec.disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    chardev = "pty" if console_socket is None else "unix"
    serial = _sub(devices, "serial", type=chardev)
    if console_socket is not None:
        _sub(serial, "source", mode="bind", path=str(console_socket))
    if serial_log is not None:
        _sub(serial, "log", file=str(serial_log), append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type=chardev)
    if console_socket is not None:
        _sub(console, "source", mode="bind", path=str(console_socket))
    _sub(console, "target", type="serial", port="0")
    if spec.panic_device == "isa":
        panic = _sub(devices, "panic", model="isa")
        _sub(panic, "address", type="isa", iobase="0x505")
    if spec.watchdog is not None:
        _sub(devices, "watchdog", model=spec.watchdog.model, action=spec.watchdog.action)
    _sub(devices, "memballoon", model="none")
    # libvirt adds a UHCI controller to every pc guest unless told not to; nothing here uses
    # USB, and under TCG the kernel's USB early handoff alone costs seconds of every boot.
    _sub(devices, "controller", type="usb", model="none")
    for snippet in spec.extra_devices:
        devices.append(etree.fromstring(snippet))

    args = _qemu_args(spec)
    if args:
        cmd = etree.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for arg in args:
            etree.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def console_socket_of(xml: str) -> Path | None:
    """The unix socket the first serial port listens on, from a domain's XML (a restored
    domain's is the saved one: the same path); None for a pty console."""
    root = etree.fromstring(xml.encode())
    source = root.find("./devices/serial[@type='unix']/source[@mode='bind']")
    path = source.get("path") if source is not None else None
    return Path(path) if path else None


def _render_cpu(root: etree._Element, spec: GuestSpec) -> None:
    if spec.cpu_model == "host":
        cpu = _sub(root, "cpu", mode="host-passthrough", check="none")
    else:
        cpu = _sub(root, "cpu", mode="custom", match="exact", check="none")
        _sub(cpu, "model", spec.cpu_model, fallback="forbid")
        if spec.nested and (nested_flag(spec.cpu_model), "require") not in spec.cpu_features:
            # Under TCG QEMU emulates SVM; on a KVM host the feature must be the host's own.
            _sub(cpu, "feature", policy="require", name=nested_flag(spec.cpu_model))
    # libvirt takes <feature> under host-passthrough too: a feature toggled on either.
    for name, policy in spec.cpu_features:
        _sub(cpu, "feature", policy=policy, name=name)


def _qemu_args(spec: GuestSpec) -> list[str]:
    args: list[str] = []
    if spec.ssh_port is not None:
        # restrict=on: the guest reaches nothing but the forwarded port, never the network.
        args += [
            "-netdev",
            f"user,id=rlnet0,restrict=on,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
            "-device",
            # Slot 0x1f: libvirt allocates its own devices (watchdog, disks) from the low
            # end, and it does not know about this one.
            "virtio-net-pci,netdev=rlnet0,addr=0x1f",
        ]
    for fw_name, path in spec.fw_cfg:
        args += ["-fw_cfg", f"name={fw_name},file={path}"]
    return args
