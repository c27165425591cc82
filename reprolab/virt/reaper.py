"""Remove domains that a dead run left behind.

Run at the start of every session: whatever an earlier run could not clean up (its
AUTODESTROY connection outlived it, libvirtd was restarted) is destroyed before new guests
start, so a host never fills up with orphans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt

from reprolab.virt.domain import run_tag_of
from reprolab.virt.metadata import RunTag

#: A domain whose owner ran on another machine is only reaped after this long.
DEFAULT_MAX_AGE_S = 6 * 3600


@dataclass(frozen=True)
class Reaped:
    name: str
    reason: str


def reap_orphans(conn: Any, *, max_age_s: float = DEFAULT_MAX_AGE_S, mine: bool = False
                 ) -> list[Reaped]:
    """Destroy tagged domains whose owner is gone; with ``mine``, also this process's own.

    ``mine`` is for a session reconnecting after libvirtd went away: the domains it started
    on the lost connection outlived their AUTODESTROY and nobody else will remove them.
    """
    reaped: list[Reaped] = []
    me = RunTag.current("")
    try:
        domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    except libvirt.libvirtError:
        return reaped
    for dom in domains:
        tag = run_tag_of(dom)
        if tag is None:
            continue  # not ours: never touch a domain reprolab did not tag
        alive = tag.owner_alive()
        if mine and (tag.host, tag.pid, tag.pid_start) == (me.host, me.pid, me.pid_start):
            reason = "left on a libvirt connection this run lost"
        elif alive is False:
            reason = f"owner pid {tag.pid} on {tag.host} is gone"
        elif alive is None and tag.age_seconds() > max_age_s:
            reason = f"owner on {tag.host} started it {tag.age_seconds() / 3600:.1f} h ago"
        else:
            continue
        try:
            name = dom.name()
            dom.destroy()
        except libvirt.libvirtError:
            continue
        reaped.append(Reaped(name, reason))
    return reaped
