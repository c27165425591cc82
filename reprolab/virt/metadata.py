"""Who started a domain, recorded in its ``<metadata>`` so a later run can reap it.

AUTODESTROY already removes a domain when its owner's libvirt connection closes, which
covers Ctrl-C and SIGKILL of a local runner. The tag covers the rest: a runner whose
connection outlived it (a hung ssh tunnel to a lab host), or a daemon restarted mid-run.
The owner is identified by host, pid *and* the pid's start time, so a recycled pid is
never mistaken for a live owner.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

NS = "https://reprolab.dev/xmlns/run/1"
PREFIX = "reprolab"


def _pid_start(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class RunTag:
    host: str
    pid: int
    pid_start: int
    user: str
    started: str
    test: str

    @classmethod
    def current(cls, test: str) -> RunTag:
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            pid_start=_pid_start(pid) or 0,
            user=os.environ.get("USER", str(os.getuid())),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            test=test,
        )

    def to_element(self) -> etree._Element:
        el = etree.Element(f"{{{NS}}}run", nsmap={PREFIX: NS})
        for key in ("host", "pid", "pid_start", "user", "started", "test"):
            child = etree.SubElement(el, f"{{{NS}}}{key}")
            child.text = str(getattr(self, key))
        return el

    @classmethod
    def from_xml(cls, text: str) -> RunTag | None:
        try:
            el = etree.fromstring(text.encode())
        except etree.XMLSyntaxError:
            return None

        def get(key: str) -> str:
            found = el.find(f"{{{NS}}}{key}")
            if found is None:
                found = el.find(key)
            return (found.text or "") if found is not None else ""

        try:
            return cls(
                host=get("host"),
                pid=int(get("pid")),
                pid_start=int(get("pid_start") or 0),
                user=get("user"),
                started=get("started"),
                test=get("test"),
            )
        except ValueError:
            return None

    def age_seconds(self, now: datetime | None = None) -> float:
        try:
            started = datetime.fromisoformat(self.started)
        except ValueError:
            return float("inf")
        return ((now or datetime.now(UTC)) - started).total_seconds()

    def owner_alive(self) -> bool | None:
        """True/False on this host; None when the owner ran elsewhere (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        start = _pid_start(self.pid)
        return start is not None and (self.pid_start == 0 or start == self.pid_start)
