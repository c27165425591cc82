"""Which layer an event came from, and which layer a nested attempt's failure belongs to.

L0 is the host's QEMU and libvirt (the domain crashed or paused, QEMU died, the harness's
own NMI, the per-vCPU thread times of :mod:`reprolab.run.vcpustats`), L1 the guest the session
booted (its console, its vmcore), L2 a guest L1's VMM runs (its console, streamed by
:mod:`reprolab.guest.l2console`). The attribution answers what an engineer asks first about a
nested failure: whose panic is it, and was the layer below still alive? "L2 panic" with L1
alive is an L2 kernel bug; "L1 panic while starting L2" points at L1's KVM; a silent L2
whose L1 still answers is told apart from a silent L1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from reprolab.detect.events import (
    HANG_KINDS,
    NMI_INJECTED,
    NO_OUTPUT,
    PVPANIC,
    WATCHDOG_FIRE,
    GuestEvent,
)
from reprolab.guest.l2console import l2_of

if TYPE_CHECKING:
    from reprolab.guest.handle import Guest

Layer = Literal["L0", "L1", "L2"]
L2State = Literal["none", "starting", "running", "ended"]

#: Seconds of L2 console silence, with L1 answering, that count as a silent L2.
L2_SILENCE = 120.0
#: L2 reports that an L1 which stopped scheduling its vCPU threads would cause.
STARVATION_KINDS = frozenset({"rcu-stall", "soft-lockup", "hard-lockup", "hung-task",
                              NO_OUTPUT})
#: Seconds between an L1 failure and a starved L2's report that make them one event.
COINCIDE_S = 60.0

@dataclass(frozen=True)
class LayerEvent:
    layer: Layer
    event: GuestEvent

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, **self.event.to_json()}


def layer_of_l1_event(event: GuestEvent) -> Layer:
    """Events on the L1 guest's own timeline: libvirt's and the harness's actions are L0's;
    the console and the harness's silence verdict on it are L1's."""
    if event.source == "libvirt" or event.kind == NMI_INJECTED:
        return "L0"
    return "L1"


def timeline(l1: Sequence[GuestEvent], l2: Sequence[GuestEvent],
             l0: Sequence[GuestEvent] = ()) -> list[LayerEvent]:
    """Every event of every layer, tagged, in time order."""
    tagged = [LayerEvent(layer_of_l1_event(e), e) for e in l1]
    tagged += [LayerEvent("L2", e) for e in l2]
    tagged += [LayerEvent("L0", e) for e in l0]
    return sorted(tagged, key=lambda t: t.event.at)


@dataclass(frozen=True)
class LayerVerdict:
    """The failing layer and a title naming it; ``layer`` None when no layer failed."""

    layer: Layer | None
    title: str
    kind: str | None
    l1_alive: bool | None
    l2_state: L2State
    #: The host QEMU's vCPU threads that spun while the guest was silent (L0's view).
    spinning_vcpus: tuple[int, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, "title": self.title, "kind": self.kind,
                "l1_alive": self.l1_alive, "l2_state": self.l2_state,
                "spinning_vcpus": list(self.spinning_vcpus)}


def _words(kind: str) -> str:
    return kind.replace("-", " ")


def l2_state(started: bool, ready: bool, ended: bool) -> L2State:
    if not started:
        return "none"
    if ended:
        return "ended"
    return "running" if ready else "starting"


def attribute(l1: list[GuestEvent], l2: list[GuestEvent], *, l2_state: L2State,
              l1_alive: bool | None, l2_silence: float | None = None,
              spinning_vcpus: tuple[int, ...] = (), l2_silence_limit: float = L2_SILENCE,
              ) -> LayerVerdict:
    """Name the layer that failed first.

    ``l1_alive``: did L1 answer at the end (None: not asked). ``l2_silence``: seconds since
    L2 last printed. ``spinning_vcpus``: L0's vCPU threads that spun while L1 was silent.
    """
    l1_fatal = next((e for e in l1 if e.fatal), None)
    l2_fatal = next((e for e in l2 if e.fatal), None)

    def verdict(layer: Layer | None, title: str, kind: str | None) -> LayerVerdict:
        return LayerVerdict(layer, title, kind, l1_alive, l2_state, spinning_vcpus)

    # L2's vCPUs are threads of L1: an L1 CPU stuck for minutes starves L2, whose stall
    # report may reach the host a moment before L1's own. A starved L2 reporting close to
    # an L1 failure is the L1 failure's consequence.
    starved = (l2_fatal is not None and l1_fatal is not None
               and l2_fatal.kind in STARVATION_KINDS
               and abs(l1_fatal.at - l2_fatal.at) <= COINCIDE_S)
    if l2_fatal is not None and not starved and (l1_fatal is None or
                                                 l2_fatal.at <= l1_fatal.at):
        if l1_fatal is not None:
            after = f", then L1 {_words(l1_fatal.kind)}"
        else:
            after = {True: ", L1 alive", False: ", L1 not answering", None: ""}[l1_alive]
        return verdict("L2", f"L2 {_words(l2_fatal.kind)}{after}", l2_fatal.kind)
    if l1_fatal is not None:
        during = {"starting": " while starting L2", "running": " while L2 ran",
                  "ended": " after L2 ended", "none": ""}[l2_state]
        if l2_fatal is not None:
            during += f" (L2 {_words(l2_fatal.kind)} follows)"
        if l1_fatal.kind in HANG_KINDS:
            if spinning_vcpus:
                names = " and ".join(str(c) for c in sorted(spinning_vcpus))
                threads = "threads" if len(spinning_vcpus) > 1 else "thread"
                return verdict("L0", f"L0: QEMU vCPU {names} {threads} spinning, L1 "
                               f"silent{during}", l1_fatal.kind)
            what = "silent" if l1_fatal.kind == NO_OUTPUT else "stopped by its watchdog"
            return verdict("L1", f"L1 {what}{during}", l1_fatal.kind)
        kind = "panic" if l1_fatal.kind == PVPANIC else l1_fatal.kind
        return verdict("L1", f"L1 {_words(kind)}{during}", kind)
    if (l2_state == "running" and l2_silence is not None and l2_silence >= l2_silence_limit
            and l1_alive):
        return verdict("L2", f"L2 silent for {l2_silence:.0f} s, L1 alive", NO_OUTPUT)
    if l2_state == "ended" and l1_alive:
        return verdict("L2", "L2's VMM exited, L1 alive", "vmm-exit")
    return verdict(None, "no layer failed", None)


def conclude(guest: Guest, *, probe_l1: bool = True, spinning_vcpus: tuple[int, ...] = ()
             ) -> LayerVerdict | None:
    """The attempt's layer verdict, written as ``layers.json`` (timeline included).

    None for an attempt that ran no L2 and saw no fatal event (nothing to attribute).
    """
    l2 = l2_of(guest)
    l1_events = list(guest.events)
    if l2 is None and not any(e.fatal for e in l1_events):
        return None
    l1_alive: bool | None = None
    if probe_l1 and guest.fatal_event is None and guest.ssh is not None:
        try:
            guest.ssh.run("true", timeout=20.0, check=True)
            l1_alive = True
        except Exception:
            l1_alive = False
    elif guest.fatal_event is not None:
        l1_alive = False
    l2_events = list(l2.events) if l2 is not None else []
    state = l2_state(l2 is not None and l2.started_at is not None,
                     l2 is not None and l2.ready_at is not None,
                     l2 is not None and l2.exit is not None)
    v = attribute(l1_events, l2_events, l2_state=state, l1_alive=l1_alive,
                  l2_silence=l2.silence() if l2 is not None else None,
                  spinning_vcpus=spinning_vcpus)
    if l2 is not None and l1_alive:
        from reprolab.scenario.kvmexits import snapshot

        try:
            snapshot(guest, guest.directory)
        except Exception as exc:  # the counters are evidence, never the verdict
            guest.notes.append(f"KVM flow in L1 not read: {type(exc).__name__}: {exc}")
    write(guest.directory / "layers.json", v, timeline(l1_events, l2_events))
    return v


def write(path: Path, verdict: LayerVerdict, events: list[LayerEvent]) -> None:
    path.write_text(json.dumps({"verdict": verdict.to_json(),
                                "timeline": [e.to_json() for e in events]}, indent=2) + "\n")


__all__ = ["PVPANIC", "WATCHDOG_FIRE", "Layer", "LayerEvent", "LayerVerdict", "attribute",
           "conclude", "timeline"]


def conclude_attempt(guest: Guest, dossier: Path | None, notes: list[str]) -> None:
    """The session's hook at the end of an attempt: stop the vCPU sampler, name the
    spinning vCPU in the dossier, attribute the failure to a layer, close L2's console.

    Never fails the attempt: what cannot be read is a note.
    """
    from reprolab.run.vcpustats import annotate_dossier, stop_sampling

    try:
        spin = stop_sampling(guest)
        annotate_dossier(dossier, spin)
        if spin is not None:
            notes.append(f"L0: {spin.describe()} while the guest was silent")
        verdict = conclude(guest, spinning_vcpus=spin.spinning if spin is not None else ())
        if verdict is not None:
            notes.append(f"layer verdict: {verdict.title}")
    except Exception as exc:  # evidence, never the verdict
        notes.append(f"layer attribution failed: {type(exc).__name__}: {exc}")
    finally:
        l2 = l2_of(guest)
        if l2 is not None:
            l2.close()
