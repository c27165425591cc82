"""The lab's libvirt hosts as a pool that several processes share within each host's capacity.

``--reprolab-hosts`` names either an ansible inventory (the same file that provisions the lab,
so capacities are written once) or a comma-separated list of libvirt URIs. Every pytest-xdist
worker builds its own :class:`HostPool` over one shared state directory: a guest slot is a
lock file held with ``flock`` (released by the kernel if the worker dies, so a crashed worker
never strands a slot), and hosts found broken are recorded in a JSON file that every worker
reads before choosing, so one worker's discovery that a host's libvirt is down moves all the
others' work elsewhere, and the end-of-run summary can name it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import yaml
from filelock import FileLock, Timeout

from reprolab.capacity import guests_per_host, parse_memory
from reprolab.errors import InfraError, UserError
from reprolab.paths import runtime_root

#: Inventory variables reprolab reads (the reprolab_kvm_host_* ones are that role's own).
URI_VAR = "reprolab_uri"
MAX_GUESTS_VAR = "reprolab_kvm_host_max_guests"
CORES_VAR = "reprolab_kvm_host_cores"
MEMORY_GIB_VAR = "reprolab_kvm_host_memory_gib"
MEMORY_VAR = "reprolab_kvm_host_memory"

_LOCAL_SCHEMES = ("qemu", "qemu+unix", "test")
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class GuestSize:
    """The guest size capacities are computed for when a host gives no explicit count."""

    vcpus: int = 2
    memory_mib: int = 1024


@dataclass(frozen=True)
class Host:
    """One libvirt host and how many guests reprolab may run on it at once."""

    name: str
    uri: str
    capacity: int
    #: Where ``capacity`` came from: "given", "cores/memory", "measured" or "default".
    capacity_from: str = "given"

    @property
    def local(self) -> bool:
        """True when libvirt runs on this machine (no transport to another host)."""
        parts = urlsplit(self.uri)
        return parts.scheme in _LOCAL_SCHEMES and not parts.hostname

    @property
    def key(self) -> str:
        """A file-name-safe, collision-free token for lock and state files."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)[:40]
        return f"{safe}-{hashlib.sha256(self.uri.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class HostTrouble:
    """Why a host was taken out of the pool, and by whom."""

    name: str
    uri: str
    reason: str
    at: str
    pid: int
    worker: str | None = None


# --- parsing --------------------------------------------------------------------------------


def parse_hosts(value: str, *, guest: GuestSize = GuestSize()) -> tuple[Host, ...]:
    """Hosts from ``--reprolab-hosts``: an inventory path or ``URI[;guests=N],URI...``."""
    text = value.strip()
    if not text:
        raise UserError("--reprolab-hosts is empty: give an ansible inventory or libvirt URIs")
    path = Path(text).expanduser()
    if "://" not in text.split(",")[0]:
        if not path.is_file():
            raise UserError(
                f"--reprolab-hosts: {text!r} is neither a libvirt URI nor an inventory file"
            )
        return hosts_from_inventory(path, guest=guest)
    return hosts_from_uris(text, guest=guest)


def hosts_from_uris(text: str, *, guest: GuestSize = GuestSize()) -> tuple[Host, ...]:
    """``qemu:///system,qemu+ssh://root@h/system;guests=2`` (also ``;cores=``, ``;memory=``,
    ``;name=``)."""
    hosts = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        uri, *options = (piece.strip() for piece in item.split(";"))
        opts: dict[str, str] = {}
        for option in options:
            key, sep, val = option.partition("=")
            if not sep or key not in {"guests", "cores", "memory", "name"}:
                raise UserError(
                    f"--reprolab-hosts: {option!r} after {uri} is not guests=N, cores=N, "
                    "memory=SIZE or name=NAME"
                )
            opts[key] = val
        _check_uri(uri, where="--reprolab-hosts")
        variables: dict[str, Any] = {}
        if "guests" in opts:
            variables[MAX_GUESTS_VAR] = opts["guests"]
        if "cores" in opts:
            variables[CORES_VAR] = opts["cores"]
        if "memory" in opts:
            variables[MEMORY_VAR] = opts["memory"]
        name = opts.get("name") or _name_from_uri(uri)
        capacity, source = _capacity(name, uri, variables, guest)
        hosts.append(Host(name=name, uri=uri, capacity=capacity, capacity_from=source))
    return _unique(hosts, "--reprolab-hosts")


def hosts_from_inventory(path: Path, *, guest: GuestSize = GuestSize()) -> tuple[Host, ...]:
    """Every host of an ansible YAML inventory that sets ``reprolab_uri``.

    Variables are merged as ansible does for the cases an inventory uses: group ``vars`` and
    ``group_vars/`` files from ``all`` down to the host's own groups (children over parents),
    then the host's inline variables and ``host_vars/``. ``{{ name }}`` references between
    variables are resolved, with ``inventory_hostname`` and ``ansible_host`` available; any
    richer Jinja in the variables reprolab reads is refused with the host named.
    """
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a YAML inventory (expected groups at the top level)")
    base = path.parent
    group_vars: dict[str, dict[str, Any]] = {}
    host_groups: dict[str, list[tuple[int, str]]] = {}
    host_inline: dict[str, dict[str, Any]] = {}

    def walk(name: str, body: Any, ancestors: tuple[str, ...]) -> None:
        body = body or {}
        if not isinstance(body, dict):
            raise UserError(f"{path}: group {name!r} must be a mapping")
        merged = {**_mapping(body.get("vars"), path, name), **_vars_file(base, "group_vars", name)}
        group_vars[name] = {**group_vars.get(name, {}), **merged}
        lineage = (*ancestors, name)
        for host, hvars in _mapping(body.get("hosts"), path, name).items():
            memberships = host_groups.setdefault(str(host), [])
            memberships.extend((depth, group) for depth, group in enumerate(lineage))
            host_inline.setdefault(str(host), {}).update(_mapping(hvars, path, str(host)))
        for child, child_body in _mapping(body.get("children"), path, name).items():
            walk(str(child), child_body, lineage)

    for group, body in data.items():
        walk(str(group), body, () if group == "all" else ("all",))
    all_vars = group_vars.get("all", {})
    hosts = []
    for host, groups in host_groups.items():
        variables: dict[str, Any] = {"inventory_hostname": host, "ansible_host": host}
        variables.update(all_vars)
        # Parents before children, so the nearer group wins, as in ansible.
        for _, group in sorted(set(groups)):
            variables.update(group_vars.get(group, {}))
        variables.update(host_inline.get(host, {}))
        variables.update(_vars_file(base, "host_vars", host))
        if variables.get(URI_VAR) is None:
            continue
        uri = _resolve(variables, URI_VAR, host, path)
        _check_uri(uri, where=f"{path}: {host}")
        resolved = {
            var: _resolve(variables, var, host, path)
            for var in (MAX_GUESTS_VAR, CORES_VAR, MEMORY_GIB_VAR, MEMORY_VAR)
            if variables.get(var) is not None
        }
        if MEMORY_GIB_VAR in resolved:
            resolved.setdefault(MEMORY_VAR, f"{resolved[MEMORY_GIB_VAR]}G")
        capacity, source = _capacity(host, uri, resolved, guest)
        hosts.append(Host(name=host, uri=uri, capacity=capacity, capacity_from=source))
    if not hosts:
        raise UserError(f"{path}: no host sets {URI_VAR}; add it to the KVM hosts' group_vars")
    return _unique(hosts, str(path))


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _mapping(value: Any, path: Path, owner: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{path}: {owner!r}: expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _vars_file(base: Path, kind: str, name: str) -> dict[str, Any]:
    """``group_vars/NAME.yml`` (or ``.yaml``, or a ``NAME/`` directory of such files)."""
    merged: dict[str, Any] = {}
    folder = base / kind
    candidates = [folder / f"{name}{ext}" for ext in (".yml", ".yaml", "")]
    for candidate in candidates:
        files = sorted(candidate.glob("*.y*ml")) if candidate.is_dir() else [candidate]
        for file in files:
            if file.is_file():
                merged.update(_mapping(_load_yaml(file), file, name))
    return merged


def _resolve(variables: Mapping[str, Any], var: str, host: str, path: Path) -> str:
    value = variables[var]
    for _ in range(10):
        if not isinstance(value, str) or "{" not in value:
            return str(value)

        def sub(match: re.Match[str]) -> str:
            ref = match.group(1)
            if variables.get(ref) is None:
                raise UserError(f"{path}: {host}: {var} refers to {ref}, which is not set")
            return str(variables[ref])

        new = _TEMPLATE.sub(sub, value)
        if new == value:
            break
        value = new
    text = str(value)
    if "{{" in text or "{%" in text:
        raise UserError(
            f"{path}: {host}: {var}={variables[var]!r} uses Jinja reprolab does not evaluate; "
            "write plain {{ variable }} references"
        )
    return text


def _check_uri(uri: str, *, where: str) -> None:
    parts = urlsplit(uri)
    if not parts.scheme or not parts.path or "://" not in uri:
        raise UserError(f"{where}: {uri!r} is not a libvirt URI (e.g. qemu+ssh://user@host/system)")


def _name_from_uri(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.netloc or "local"


def _unique(hosts: list[Host], where: str) -> tuple[Host, ...]:
    for attr in ("uri", "name"):
        seen: set[str] = set()
        for host in hosts:
            value = getattr(host, attr)
            if value in seen:
                hint = "" if attr == "uri" else " (tell them apart with ;name=...)"
                raise UserError(f"{where}: host {attr} {value!r} given twice{hint}")
            seen.add(value)
    return tuple(hosts)


def _capacity(
    name: str, uri: str, variables: Mapping[str, Any], guest: GuestSize
) -> tuple[int, str]:
    if MAX_GUESTS_VAR in variables:
        return _count(variables[MAX_GUESTS_VAR], name, "guests"), "given"
    cores = variables.get(CORES_VAR)
    memory = variables.get(MEMORY_VAR)
    source = "cores/memory"
    if cores is None or memory is None:
        if not Host(name, uri, 1).local:
            # An unknown remote host gets one guest at a time: slow but never oversubscribed.
            return 1, "default"
        cores = cores if cores is not None else os.cpu_count() or 1
        memory = memory if memory is not None else f"{_local_memory_mib()}M"
        source = "measured"
    capacity = guests_per_host(
        host_cores=_count(cores, name, "cores"),
        host_memory_mib=parse_memory(str(memory), what=f"{name}: memory"),
        guest_vcpus=guest.vcpus,
        guest_memory_mib=guest.memory_mib,
    )
    if capacity < 1:
        raise UserError(
            f"{name}: {cores} cores and {memory} of memory hold no guest of {guest.vcpus} vCPUs "
            f"and {guest.memory_mib} MiB; give it more or set {MAX_GUESTS_VAR}"
        )
    return capacity, source


def _count(value: Any, name: str, what: str) -> int:
    try:
        count = int(str(value))
    except ValueError:
        raise UserError(f"{name}: {what}={value!r} is not a whole number") from None
    if count < 1:
        raise UserError(f"{name}: {what} must be at least 1 (got {count})")
    return count


def _local_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise InfraError("/proc/meminfo has no MemTotal line")


# --- the shared pool ------------------------------------------------------------------------


def run_state_dir(run_id: str) -> Path:
    """Where one run's workers meet: the same ``run_id`` (e.g. xdist's testrunuid) -> same dir."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:64] or "run"
    path = runtime_root() / "hosts" / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Lease:
    """One guest slot on one host, held until :meth:`release` (or the ``with`` block ends)."""

    pool: HostPool
    host: Host
    slot: int
    _lock: FileLock = field(repr=False)
    released: bool = False

    @property
    def tag(self) -> str:
        """Unique among concurrent leases: fit for domain names and port offsets."""
        return f"{self.host.key}-s{self.slot}"

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._lock.release()

    def mark_unhealthy(self, reason: str, *, worker: str | None = None) -> None:
        """Take this lease's host out of the pool for everyone, and give the slot back."""
        self.pool.mark_unhealthy(self.host, reason, worker=worker)
        self.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class HostPool:
    """Hosts shared by every process that opens a pool over the same ``state_dir``."""

    def __init__(self, hosts: Sequence[Host], state_dir: Path, *, poll: float = 0.2) -> None:
        if not hosts:
            raise UserError("the host pool needs at least one host")
        self.hosts = tuple(hosts)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.poll = poll
        self._health_file = self.state_dir / "unhealthy.json"
        self._health_lock = FileLock(self.state_dir / "unhealthy.json.lock")

    @classmethod
    def from_option(
        cls, value: str, state_dir: Path, *, guest: GuestSize = GuestSize()
    ) -> HostPool:
        return cls(parse_hosts(value, guest=guest), state_dir)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise UserError(f"no host named {name!r} in the pool ({', '.join(self.names())})")

    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def acquire(self, timeout: float | None = None, *, exclude: Collection[str] = ()) -> Lease:
        """A free guest slot on a healthy host, waiting up to ``timeout`` s (None: forever).

        Slots are tried breadth-first (slot 0 of every host, then slot 1, ...) from a start
        that differs per process, so concurrent workers spread over hosts before stacking on
        one. Hosts named in ``exclude`` are skipped for this call only, for a retry that must
        land elsewhere; unhealthy hosts are skipped by everyone.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            candidates = self._candidates(exclude)
            for host, slot in self._order(candidates):
                lock = FileLock(self.state_dir / f"{host.key}.slot{slot}.lock", thread_local=False)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                if host.name in self.unhealthy():  # marked while we were choosing
                    lock.release()
                    continue
                return Lease(pool=self, host=host, slot=slot, _lock=lock)
            if deadline is not None and time.monotonic() >= deadline:
                slots = sum(h.capacity for h in candidates)
                raise InfraError(
                    f"no lab host free within {timeout:g} s: all {slots} guest slots on "
                    f"{', '.join(h.name for h in candidates)} are busy"
                )
            time.sleep(self.poll)

    def _candidates(self, exclude: Collection[str]) -> list[Host]:
        troubles = self.unhealthy()
        candidates = [h for h in self.hosts if h.name not in troubles and h.name not in exclude]
        if not candidates:
            why = "; ".join(f"{t.name}: {t.reason}" for t in troubles.values()) or "none healthy"
            skipped = f" (excluded: {', '.join(sorted(exclude))})" if exclude else ""
            raise InfraError(f"no healthy lab host left{skipped}: {why}")
        return candidates

    def _order(self, hosts: list[Host]) -> Iterator[tuple[Host, int]]:
        start = os.getpid() % len(hosts)
        rotated = hosts[start:] + hosts[:start]
        for slot in range(max(h.capacity for h in hosts)):
            for host in rotated:
                if slot < host.capacity:
                    yield host, slot

    @contextlib.contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[Lease]:
        """``with pool.lease() as lease:`` — the slot is given back however the block ends."""
        held = self.acquire(timeout)
        try:
            yield held
        finally:
            held.release()

    def mark_unhealthy(self, host: Host | str, reason: str, *, worker: str | None = None) -> None:
        """Record ``host`` as broken for every process of the run; the first reason is kept."""
        target = self.host(host) if isinstance(host, str) else host
        with self._health_lock:
            troubles = self._read_health()
            if target.name in troubles:
                return
            troubles[target.name] = HostTrouble(
                name=target.name,
                uri=target.uri,
                reason=reason.strip().splitlines()[0] if reason.strip() else "unhealthy",
                at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                pid=os.getpid(),
                worker=worker,
            )
            tmp = self._health_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({k: asdict(v) for k, v in troubles.items()}, indent=2))
            os.replace(tmp, self._health_file)

    def unhealthy(self) -> dict[str, HostTrouble]:
        """Hosts taken out of the pool so far, by name (a consistent snapshot)."""
        return self._read_health()

    def _read_health(self) -> dict[str, HostTrouble]:
        try:
            raw = json.loads(self._health_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise InfraError(f"{self._health_file}: host health record unreadable: {exc}") from exc
        return {name: HostTrouble(**entry) for name, entry in raw.items()}

    def summary(self) -> list[str]:
        """One line per host for the end of a run: capacity, and health with the reason."""
        troubles = self.unhealthy()
        width = max(len(h.name) for h in self.hosts)
        lines = []
        for host in self.hosts:
            trouble = troubles.get(host.name)
            state = f"UNHEALTHY: {trouble.reason}" if trouble else "healthy"
            lines.append(
                f"{host.name:<{width}}  {host.uri}  {host.capacity} guest(s) "
                f"({host.capacity_from})  {state}"
            )
        return lines


def total_capacity(hosts: Sequence[Host]) -> int:
    """Guest slots of the whole pool: the most xdist workers worth starting."""
    return sum(host.capacity for host in hosts)

