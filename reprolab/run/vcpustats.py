"""CPU time of the host QEMU's vCPU threads, sampled on the attempt's timeline (layer L0).

Under TCG each vCPU is one host thread of QEMU (``qemu_tcg_cpu_thread_fn``), and libvirt
reports each thread's CPU time (virDomainGetVcpus, the ``vcpu.N.time`` of the domain
stats). When a guest goes silent, a vCPU thread burning a whole host CPU while the others
idle is the CPU that spins with interrupts off; one whose time stands still is halted or
descheduled. Sampled once a second from a thread of its own, written to ``vcpustats.jsonl``
in the attempt directory; :func:`spinning` names the vCPUs that were spinning while the
guest was silent, for the layer verdict and the dossier. (The silence starts at the last
console line, which may be long before the wedge, so the window is the end of it.)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprolab.guest.handle import Guest

#: Share of one host CPU a vCPU thread must use over the window to count as spinning.
#: Measured here (2 cores shared with builds and other guests): a vCPU wedged irqs-off
#: gets 0.25-0.35 of a host CPU, an idle one 0.05-0.15.
SPIN_SHARE = 0.2
#: Seconds before the hang was called (silence timeout, watchdog) the spin is measured
#: over: the guest is silent then, so a busy vCPU thread is spinning, not working.
WINDOW_S = 10.0


@dataclass(frozen=True)
class Sample:
    #: Seconds on the guest's event clock (since it was resumed).
    at: float
    #: vCPU number -> thread CPU time, nanoseconds.
    cpu_ns: dict[int, int]

    def to_json(self) -> dict[str, object]:
        return {"at": round(self.at, 3), "vcpu_time_ns": {str(k): v for k, v in
                                                          self.cpu_ns.items()}}


@dataclass(frozen=True)
class Spin:
    #: The busiest vCPU.
    vcpu: int
    #: Share of a host CPU its thread used over the window (1.0: one whole CPU).
    share: float
    #: Every vCPU's share over the same window.
    shares: dict[int, float]
    #: Every vCPU at or above the threshold, busiest first.
    spinning: tuple[int, ...] = ()

    def describe(self) -> str:
        every = ", ".join(f"vCPU {c} {s:.0%}" for c, s in sorted(self.shares.items()))
        if len(self.spinning) > 1:
            names = " and ".join(str(c) for c in sorted(self.spinning))
            return f"QEMU vCPU {names} threads spinning (of a host CPU: {every})"
        return f"QEMU vCPU {self.vcpu} thread spinning (of a host CPU: {every})"


def read_vcpu_times(dom: Any) -> dict[int, int]:
    """vCPU -> thread CPU time (ns) from libvirt's virDomainGetVcpus."""
    info, _maps = dom.vcpus()
    return {int(n): int(cpu_time) for n, _state, cpu_time, _pcpu in info}


def shares(samples: Sequence[Sample], start: float, end: float) -> dict[int, float]:
    """Each vCPU's share of a host CPU between the samples nearest ``start`` and ``end``."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2:
        before = [s for s in samples if s.at <= end]
        inside = before[-2:]
    if len(inside) < 2:
        return {}
    a, b = inside[0], inside[-1]
    span = b.at - a.at
    if span <= 0:
        return {}
    return {c: max(0.0, (b.cpu_ns[c] - a.cpu_ns.get(c, b.cpu_ns[c])) / 1e9 / span)
            for c in b.cpu_ns}


def spinning(samples: Sequence[Sample], called_at: float, *, window: float = WINDOW_S,
             threshold: float = SPIN_SHARE) -> Spin | None:
    """The vCPU whose thread was busiest in the ``window`` s before the hang was called
    (``called_at``), if it used at least ``threshold`` of a host CPU (None: none did)."""
    share = shares(samples, called_at - window, called_at)
    if not share:
        return None
    busy = tuple(sorted((c for c in share if share[c] >= threshold),
                        key=lambda c: -share[c]))
    if not busy:
        return None
    return Spin(busy[0], share[busy[0]], share, busy)


class Sampler:
    """Samples a domain's vCPU thread times every ``interval`` s until stopped."""

    def __init__(self, dom: Any, path: Path, clock: Any, *, interval: float = 1.0) -> None:
        self._dom = dom
        self.path = path
        self._clock = clock
        self.interval = interval
        self.samples: list[Sample] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vcpustats", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        with self.path.open("a") as out:
            while not self._stop.is_set():
                try:
                    s = Sample(float(self._clock()), read_vcpu_times(self._dom))
                except Exception as exc:  # the domain went away: the samples so far stand
                    self.error = f"vCPU stats stopped: {type(exc).__name__}: {exc}"
                    return
                self.samples.append(s)
                out.write(json.dumps(s.to_json()) + "\n")
                out.flush()
                self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


_SAMPLERS: weakref.WeakKeyDictionary[Guest, Sampler] = weakref.WeakKeyDictionary()


def start_sampling(guest: Guest, interval: float = 1.0) -> Sampler | None:
    """Sample ``guest``'s vCPU threads into its attempt's ``vcpustats.jsonl``."""
    # The clock must not hold the guest: the registry's value would keep its key alive.
    t0 = time.monotonic() - guest.elapsed()
    try:
        sampler = Sampler(guest.domain.dom, guest.directory / "vcpustats.jsonl",
                          lambda: time.monotonic() - t0, interval=interval).start()
    except Exception:
        return None
    _SAMPLERS[guest] = sampler
    return sampler


def stop_sampling(guest: Guest) -> Spin | None:
    """Stop sampling; the vCPU that was spinning when the guest's hang began, if any."""
    sampler = _SAMPLERS.pop(guest, None)
    if sampler is None:
        return None
    sampler.stop()
    first = guest.fatal_event
    if first is None or guest.hang_seconds is None:
        return None
    return spinning(sampler.samples, first.at)


def annotate_dossier(dossier: Path | None, spin: Spin | None) -> None:
    """Name the spinning vCPU in the dossier (``dossier.json`` and ``report.md``)."""
    if dossier is None or spin is None or not dossier.is_file():
        return
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(dossier.read_text())
        data["spinning_vcpu"] = {"vcpu": spin.vcpu, "share": round(spin.share, 3),
                                 "spinning": list(spin.spinning),
                                 "shares": {str(k): round(v, 3) for k, v in spin.shares.items()}}
        dossier.write_text(json.dumps(data, indent=2) + "\n")
        md = dossier.parent / "report.md"
        if md.is_file():
            with md.open("a") as out:
                out.write(f"\n## vCPU threads (L0)\n\nWhile the guest was silent: "
                          f"{spin.describe()}\n")
