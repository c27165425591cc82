"""Domain lifecycle and reaping, against libvirt's test:///default driver."""

import multiprocessing
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reprolab.errors import UserError
from reprolab.guest.spec import GuestSpec
from reprolab.virt.connection import open_connection, validate_uri
from reprolab.virt.domain import Domain, run_tag_of, unique_name
from reprolab.virt.domain_xml import render_domain_xml
from reprolab.virt.metadata import RunTag
from reprolab.virt.reaper import reap_orphans

SPEC = GuestSpec(kernel=Path("/var/lib/k"), initrd=Path("/var/lib/i"))


@pytest.fixture
def conn() -> Any:
    c = open_connection("test:///default")
    yield c
    c.close()


def _dead_pid() -> int:
    proc = multiprocessing.Process(target=int)
    proc.start()
    proc.join()
    assert proc.pid is not None
    return proc.pid


def _start_tagged(conn: Any, tag: RunTag) -> Any:
    xml = render_domain_xml(SPEC, name=unique_name("reap"), tag=tag)
    return conn.createXML(xml, 0)


def test_unique_names_differ_and_are_clean() -> None:
    a, b = unique_name("test_x[1/2]"), unique_name("test_x[1/2]")
    assert a != b
    assert a.startswith(f"rl-test_x-1-2-{os.getpid()}-")


def test_start_destroy_and_state(conn: Any) -> None:
    dom = Domain.start(conn, SPEC, label="life", test="t", autodestroy=False, paused=False)
    assert dom.state().state == "running"
    tag = run_tag_of(dom.dom)
    assert tag is not None and tag.test == "t" and tag.pid == os.getpid()
    dom.destroy()
    dom.destroy()  # idempotent
    assert dom.wait_gone(2)


def test_reaper_destroys_domains_of_dead_owners_only(conn: Any) -> None:
    me = RunTag.current("alive")
    dead = replace(me, pid=_dead_pid(), test="dead")
    foreign_old = replace(me, host="elsewhere", started="2000-01-01T00:00:00+00:00")
    foreign_new = replace(me, host="elsewhere", test="fresh")
    keep = [_start_tagged(conn, me), _start_tagged(conn, foreign_new)]
    gone = [_start_tagged(conn, dead), _start_tagged(conn, foreign_old)]
    untagged = conn.createXML(render_domain_xml(SPEC, name="not-ours"), 0)
    reaped = reap_orphans(conn)
    assert {r.name for r in reaped} == {d.name() for d in gone}
    assert all(d.isActive() for d in [*keep, untagged])
    for d in [*keep, untagged]:
        d.destroy()


def test_recycled_pid_is_not_a_live_owner() -> None:
    tag = replace(RunTag.current("x"), pid_start=1)
    assert tag.owner_alive() is False
    assert replace(tag, host=socket.gethostname() + "-other").owner_alive() is None


def test_unknown_uri_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown libvirt URI 'vbox:///x'"):
        validate_uri("vbox:///x")
    assert validate_uri("qemu+ssh://root@127.0.0.1:2222/system")
