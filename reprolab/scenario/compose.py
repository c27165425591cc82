"""Several scenarios as one: set up and start in order, stop and clean up in reverse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reprolab.scenario.base import GuestLike, Scenario, require


@dataclass(frozen=True)
class Together(Scenario):
    name: ClassVar[str] = "together"

    parts: tuple[Scenario, ...] = ()

    def __post_init__(self) -> None:
        require(len(self.parts) > 0, "together", "needs at least one scenario")
        names = [p.name for p in self.parts]
        require(len(set(names)) == len(names), "together",
                f"each scenario may appear once (their pid files would clash): {names}")

    def setup(self, guest: GuestLike) -> None:
        for part in self.parts:
            part.setup(guest)

    def inject(self, guest: GuestLike) -> None:
        for part in self.parts:
            part.inject(guest)

    def stop(self, guest: GuestLike) -> None:
        for part in reversed(self.parts):
            part.stop(guest)

    def cleanup(self, guest: GuestLike) -> None:
        for part in reversed(self.parts):
            part.cleanup(guest)
