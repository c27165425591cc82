"""Helpers shared by the integration tests."""

from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from reprolab.case import CaseSpec

URI = "qemu:///system"


def make_case(name: str = "it::case", **marker: Any) -> CaseSpec:
    marker.setdefault("expect", {"kind": "panic"})
    marker.setdefault("guest", {"vcpus": 1, "memory": "512M", "image": "minimal"})
    return CaseSpec.from_marker(name, marker)


def our_domains() -> list[str]:
    conn = libvirt.open(URI)
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith("rl-")]
    finally:
        conn.close()


def domain_name(attempt_dir: Path) -> str:
    """The libvirt name of the domain an attempt ran, from the XML it kept."""
    root = etree.parse(str(attempt_dir / "domain.xml")).getroot()
    return str(root.findtext("name"))
