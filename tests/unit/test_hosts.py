"""The host pool: parsing --reprolab-hosts, and slots shared by real processes over filelocks."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from reprolab.errors import InfraError, UserError
from reprolab.hosts import (
    GuestSize,
    Host,
    HostPool,
    hosts_from_inventory,
    parse_hosts,
    run_state_dir,
    total_capacity,
)

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "ansible" / "inventories" / "lab" / "hosts.yml"
LOCAL = ROOT / "ansible" / "inventories" / "local" / "hosts.yml"
MP = multiprocessing.get_context("fork")


# --- parsing --------------------------------------------------------------------------------


def test_uri_list_with_capacities() -> None:
    hosts = parse_hosts(
        "qemu:///system;guests=3, qemu+ssh://root@127.0.0.1/system;cores=8;memory=4G,"
        "qemu+ssh://lab@kvm-9/system;name=kvm-9",
        guest=GuestSize(vcpus=2, memory_mib=1024),
    )
    assert [(h.name, h.capacity, h.capacity_from) for h in hosts] == [
        ("local", 3, "given"),
        ("root@127.0.0.1", 4, "cores/memory"),
        ("kvm-9", 1, "default"),  # a remote host with no figures runs one guest at a time
    ]
    assert hosts[0].local and not hosts[1].local
    assert total_capacity(hosts) == 8


def test_local_host_capacity_is_measured() -> None:
    (host,) = parse_hosts("qemu:///system", guest=GuestSize(vcpus=1, memory_mib=1))
    assert host.capacity_from == "measured"
    assert host.capacity == os.cpu_count()


def test_keys_are_file_safe_and_distinct() -> None:
    a, b = parse_hosts("qemu+ssh://u@h/system;name=x/y,qemu+tcp://h/system;name=x_y")
    assert "/" not in a.key and a.key != b.key


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("nowhere.yml", "neither a libvirt URI nor an inventory"),
        ("qemu:///system;slots=2", "not guests=N"),
        ("qemu:///system;guests=0", "at least 1"),
        ("qemu:///system;guests=two", "not a whole number"),
        ("qemu:///system,qemu:///system", "given twice"),
        ("qemu+ssh://a@h/system,qemu+tcp://a@h/system", "tell them apart"),
        ("qemu:///system;cores=1;memory=8G", "hold no guest"),
        ("qemu+ssh://host", "not a libvirt URI"),
    ],
)
def test_bad_host_lists_are_user_errors(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        parse_hosts(value)


def test_the_lab_example_inventory() -> None:
    hosts = parse_hosts(str(LAB))
    assert [(h.name, h.uri, h.capacity, h.capacity_from) for h in hosts] == [
        ("kvm-01", "qemu+ssh://reprolab@kvm-01.lab.example.org/system", 16, "cores/memory"),
        ("kvm-02", "qemu+ssh://reprolab@kvm-02.lab.example.org/system", 16, "cores/memory"),
        ("kvm-03", "qemu+ssh://reprolab@kvm-03.lab.example.org/system", 4, "given"),
    ]  # runner-01 sets no reprolab_uri: it runs suites, not guests


def test_the_local_ci_inventory() -> None:
    (host,) = parse_hosts(str(LOCAL))
    assert (host.name, host.uri) == ("localhost", "qemu+ssh://root@127.0.0.1/system")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inventory_precedence_and_vars_files(tmp_path: Path) -> None:
    inv = _write(
        tmp_path / "hosts.yml",
        """
all:
  vars:
    reprolab_kvm_host_max_guests: 1
    user: nobody
  children:
    lab:
      vars:
        reprolab_uri: "qemu+ssh://{{ user }}@{{ ansible_host }}/system"
      children:
        big:
          hosts:
            a: {ansible_host: a.example}
            b:
        small:
          hosts:
            c:
              reprolab_kvm_host_max_guests: 2
""",
    )
    _write(tmp_path / "group_vars" / "lab.yml", "user: lab\n")
    _write(tmp_path / "group_vars" / "big" / "cap.yml", "reprolab_kvm_host_max_guests: 8\n")
    _write(tmp_path / "host_vars" / "b.yaml", "reprolab_kvm_host_max_guests: 5\n")
    hosts = {h.name: h for h in hosts_from_inventory(inv)}
    assert hosts["a"].uri == "qemu+ssh://lab@a.example/system"
    assert hosts["b"].uri == "qemu+ssh://lab@b/system"  # ansible_host defaults to the name
    assert {n: h.capacity for n, h in hosts.items()} == {"a": 8, "b": 5, "c": 2}


def test_inventory_memory_in_gib(tmp_path: Path) -> None:
    inv = _write(
        tmp_path / "hosts.yml",
        "all:\n  hosts:\n    k:\n      reprolab_uri: qemu+ssh://k/system\n"
        "      reprolab_kvm_host_cores: 8\n      reprolab_kvm_host_memory_gib: 2\n",
    )
    (host,) = hosts_from_inventory(inv)
    assert (host.capacity, host.capacity_from) == (2, "cores/memory")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("all:\n  hosts:\n    k:\n", "no host sets reprolab_uri"),
        ("all:\n  hosts:\n    k: {reprolab_uri: 'qemu+ssh://{{ who }}@k/system'}\n",
         "refers to who"),
        ("all:\n  hosts:\n    k: {reprolab_uri: \"{{ 'qemu:///system' | lower }}\"}\n",
         "Jinja reprolab does not evaluate"),
        ("all: [1, 2]\n", "must be a mapping"),
        ("- not\n- groups\n", "not a YAML inventory"),
        ("all:\n  hosts: {k: {a: b}\n", "not valid YAML"),
    ],
)
def test_bad_inventories_are_user_errors(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=message):
        hosts_from_inventory(_write(tmp_path / "hosts.yml", text))


# --- the pool in one process ----------------------------------------------------------------


def _pool(tmp_path: Path, *capacities: int) -> HostPool:
    hosts = [Host(name=f"h{i}", uri=f"qemu+ssh://h{i}/system", capacity=c)
             for i, c in enumerate(capacities)]
    return HostPool(hosts, tmp_path / "state", poll=0.01)


def test_leases_respect_capacity(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 2)
    first, second = pool.acquire(0), pool.acquire(0)
    assert {first.slot, second.slot} == {0, 1}
    assert first.tag != second.tag
    with pytest.raises(InfraError, match="no lab host free within 0 s: all 2 guest slots"):
        pool.acquire(0)
    first.release()
    first.release()  # releasing twice is harmless
    with pool.acquire(0) as third:
        assert third.slot == first.slot
    second.release()


def test_leases_spread_over_hosts_first(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 2, 2)
    leases = [pool.acquire(0), pool.acquire(0)]
    assert {lease.host.name for lease in leases} == {"h0", "h1"}
    for lease in leases:
        lease.release()


def test_exclude_moves_work_elsewhere(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 1, 1)
    with pool.acquire(0, exclude={"h0"}) as lease:
        assert lease.host.name == "h1"
    with pytest.raises(InfraError, match=r"excluded: h0, h1"):
        pool.acquire(0, exclude={"h0", "h1"})


def test_unhealthy_hosts_are_skipped_and_reported(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 1, 1)
    lease = pool.acquire(0)
    bad = lease.host
    lease.mark_unhealthy("libvirt down: Failed to connect socket\nmore detail", worker="gw0")
    assert lease.released
    pool.mark_unhealthy(bad.name, "a later, second opinion")
    (trouble,) = pool.unhealthy().values()
    assert (trouble.name, trouble.reason, trouble.worker) == (
        bad.name, "libvirt down: Failed to connect socket", "gw0")
    for _ in range(3):
        with pool.acquire(0) as other:
            assert other.host != bad
    summary = pool.summary()
    assert any(bad.name in line and "UNHEALTHY: libvirt down" in line for line in summary)
    assert sum("healthy" in line and "UNHEALTHY" not in line for line in summary) == 1
    pool.mark_unhealthy(other.host, "disk full: 0.2 GiB free under /var/lib/reprolab")
    with pytest.raises(InfraError, match=r"no healthy lab host left.*disk full"):
        pool.acquire(0)


def test_unknown_host_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no host named 'h9'"):
        _pool(tmp_path, 1).mark_unhealthy("h9", "?")


def test_run_state_dir_is_shared_by_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPROLAB_STATE", str(tmp_path))
    assert run_state_dir("gw/xyz") == run_state_dir("gw/xyz") != run_state_dir("other")
    assert run_state_dir("gw/xyz").is_dir()


# --- real processes contending ---------------------------------------------------------------


def _hold(state: str, hosts: list[Host], conn: Connection) -> None:
    """Take a slot, report it, hold it until told to let go."""
    pool = HostPool(hosts, Path(state), poll=0.01)
    lease = pool.acquire(10)
    conn.send((lease.host.name, lease.slot))
    conn.recv()
    lease.release()
    conn.send("released")


def _try(state: str, hosts: list[Host], timeout: float, conn: Connection) -> None:
    pool = HostPool(hosts, Path(state), poll=0.01)
    try:
        with pool.acquire(timeout) as lease:
            conn.send(("got", lease.host.name, lease.slot))
    except InfraError as exc:
        conn.send(("busy", str(exc)))


def _spawn(target: Any, *args: Any) -> tuple[Any, Connection]:
    parent, child = MP.Pipe()
    proc = MP.Process(target=target, args=(*args, child))
    proc.start()
    return proc, parent


def _finish(proc: Any) -> None:
    proc.join(20)
    assert proc.exitcode == 0


def test_two_processes_contend_for_one_slot(tmp_path: Path) -> None:
    hosts = [Host(name="only", uri="qemu+ssh://only/system", capacity=1)]
    state = str(tmp_path / "state")
    holder, hold = _spawn(_hold, state, hosts)
    assert hold.recv() == ("only", 0)

    other, answer = _spawn(_try, state, hosts, 0.0)
    kind, message = answer.recv()
    _finish(other)
    assert kind == "busy" and "all 1 guest slots on only are busy" in message

    waiter, waited = _spawn(_try, state, hosts, 30.0)  # blocks until the holder lets go
    hold.send("go")
    assert hold.recv() == "released"
    assert waited.recv() == ("got", "only", 0)
    _finish(holder)
    _finish(waiter)


def test_two_processes_share_two_hosts(tmp_path: Path) -> None:
    hosts = [Host(name="local", uri="qemu:///system", capacity=1),
             Host(name="loop", uri="qemu+ssh://root@127.0.0.1/system", capacity=1)]
    state = str(tmp_path / "state")
    a, conn_a = _spawn(_hold, state, hosts)
    b, conn_b = _spawn(_hold, state, hosts)
    got = {conn_a.recv(), conn_b.recv()}
    assert got == {("local", 0), ("loop", 0)}
    for conn in (conn_a, conn_b):
        conn.send("go")
        assert conn.recv() == "released"
    _finish(a)
    _finish(b)


def test_a_dead_worker_does_not_strand_its_slot(tmp_path: Path) -> None:
    hosts = [Host(name="only", uri="qemu+ssh://only/system", capacity=1)]
    state = str(tmp_path / "state")
    holder, hold = _spawn(_hold, state, hosts)
    assert hold.recv() == ("only", 0)
    holder.kill()
    holder.join(10)
    with HostPool(hosts, Path(state)).acquire(10) as lease:
        assert lease.slot == 0


def _churn(state: str, hosts: list[Host], rounds: int, conn: Connection) -> None:
    """Lease repeatedly; while holding, count the other holders of the same host."""
    pool = HostPool(hosts, Path(state), poll=0.005)
    worst = {host.name: 0 for host in hosts}
    for _ in range(rounds):
        with pool.acquire(30) as lease:
            marker = Path(state) / f"held.{lease.host.key}.{os.getpid()}"
            marker.touch()
            holders = len(list(Path(state).glob(f"held.{lease.host.key}.*")))
            worst[lease.host.name] = max(worst[lease.host.name], holders)
            marker.unlink()
    conn.send(worst)


def test_many_processes_never_exceed_capacity(tmp_path: Path) -> None:
    hosts = [Host(name="one", uri="qemu+ssh://one/system", capacity=1),
             Host(name="two", uri="qemu+ssh://two/system", capacity=2)]
    state = tmp_path / "state"
    state.mkdir()
    workers = [_spawn(_churn, str(state), hosts, 15) for _ in range(5)]
    reports = [conn.recv() for _, conn in workers]
    for proc, _ in workers:
        _finish(proc)
    assert max(r["one"] for r in reports) <= 1
    assert max(r["two"] for r in reports) <= 2


def test_unhealthy_mark_crosses_processes(tmp_path: Path) -> None:
    hosts = [Host(name="a", uri="qemu+ssh://a/system", capacity=1),
             Host(name="b", uri="qemu+ssh://b/system", capacity=1)]
    state = tmp_path / "state"
    HostPool(hosts, state).mark_unhealthy("a", "unreachable: ssh: connect to host a port 22")
    proc, conn = _spawn(_try, str(state), hosts, 5.0)
    assert conn.recv() == ("got", "b", 0)
    _finish(proc)
