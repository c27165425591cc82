"""The record of one attempt: what happened, the verdict, and where the evidence is."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprolab.detect.events import GuestEvent
from reprolab.errors import Failure
from reprolab.run.verdict import Outcome


@dataclass(frozen=True)
class AttemptResult:
    case: str
    index: int
    outcome: Outcome
    directory: Path
    accel: str
    title: str | None = None
    kind: str | None = None
    frame: str | None = None
    signature: str | None = None
    events: tuple[GuestEvent, ...] = ()
    vmcore: Path | None = None
    vmcore_seconds: float | None = None
    dossier: Path | None = None
    boot_seconds: float | None = None
    duration: float = 0.0
    #: Why the attempt reached no kernel verdict (an ``infra-error`` attempt), as a value.
    failure: Failure | None = None
    notes: tuple[str, ...] = field(default=())
    #: Wall-clock start (ISO 8601, UTC): lines attempts of parallel workers up in time.
    started_at: str = ""
    #: Why the vmcore is missing although a dump was asked for (the verdict still stands).
    dump_error: str | None = None
    #: Lockups and stalls: the function the CPU was stuck in (the title names its caller).
    stuck_in: str | None = None
    #: The report that killed the guest when the title is a survivable first report.
    fatal_title: str | None = None
    fatal_kind: str | None = None
    #: The test body's own failure ("AssertionError: ..."), kept even after a fatal event.
    body_error: str | None = None
    #: For a hang: how long the guest had shown no progress when the harness gave up.
    hang_seconds: float | None = None
    #: Where the expected frame was found: "console", "cpu 1 in vmcore", "task 42 in vmcore".
    matched_in: str | None = None

    @property
    def error(self) -> str | None:
        """The failure's one line (``result.json``'s ``error``)."""
        return self.failure.message if self.failure is not None else None

    @property
    def error_type(self) -> str | None:
        """The failure's exception type (``result.json``'s ``error_type``)."""
        return self.failure.type if self.failure is not None else None

    def console_ending(self, lines: int = 3) -> str | None:
        """The last printable lines of the attempt's console, for a one-line infra report.

        A CI log keeps the failure line but rarely the artifacts; when a guest dies during
        boot, its last console lines are what says whether the kernel, init or the harness
        went first. Control bytes are dropped: the console is the guest's, hence hostile.
        """
        log = self.directory / "console.log"
        try:
            with log.open("rb") as fh:
                fh.seek(max(0, log.stat().st_size - 8192))
                raw = fh.read()
        except OSError:
            return None
        text = raw.decode(errors="replace")
        kept = ["".join(ch for ch in line if ch.isprintable()).strip()[:160]
                for line in text.replace("\r", "\n").splitlines()]
        kept = [line for line in kept if line]
        return " | ".join(kept[-lines:]) or None

    @property
    def dump_failed(self) -> bool:
        return self.dump_error is not None

    @property
    def hit(self) -> bool:
        return self.outcome is Outcome.REPRODUCED

    def describe(self) -> str:
        """One line for a person: what the kernel did in this attempt, and the body's error.

        The words are those of a regression failure: "reproduced: TITLE", "other crash:
        TITLE", "hang: no progress for N s".
        """
        if self.outcome is Outcome.REPRODUCED:
            what = f"reproduced: {self.title or self.kind or '?'}"
        elif self.outcome is Outcome.OTHER_CRASH:
            what = f"other crash: {self.title or self.kind or '?'}"
        elif self.outcome is Outcome.HANG:
            what = f"hang: no progress for {self.hang_seconds or 0:.0f} s"
        elif self.outcome is Outcome.INFRA_ERROR:
            what = f"infrastructure error: {self.error or '?'}"
        else:
            what = "not reproduced"
        if self.body_error:
            what += f" (test body: {self.body_error})"
        return what

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "attempt": self.index,
            "outcome": str(self.outcome),
            "accel": self.accel,
            "title": self.title,
            "kind": self.kind,
            "frame": self.frame,
            "signature": self.signature,
            "events": [e.to_json() for e in self.events],
            "vmcore": str(self.vmcore) if self.vmcore else None,
            "vmcore_seconds": self.vmcore_seconds,
            "dossier": str(self.dossier) if self.dossier else None,
            "boot_seconds": self.boot_seconds,
            "duration": round(self.duration, 3),
            "error": self.error,
            "notes": list(self.notes),
            "directory": str(self.directory),
            "started_at": self.started_at,
            "dump_error": self.dump_error,
            "error_type": self.error_type,
            "failure": self.failure.to_json() if self.failure is not None else None,
            "stuck_in": self.stuck_in,
            "fatal_title": self.fatal_title,
            "fatal_kind": self.fatal_kind,
            "body_error": self.body_error,
            "hang_seconds": self.hang_seconds,
            "matched_in": self.matched_in,
        }

    def write(self) -> Path:
        path = self.directory / "result.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


class AttemptInterrupted(KeyboardInterrupt):
    """Ctrl-C during an attempt, raised after its ``result.json`` was written.

    Still a KeyboardInterrupt (the run stops), but it carries the attempt's result so the
    caller can add the run's line to ``results.jsonl`` before it goes.
    """

    def __init__(self, result: AttemptResult) -> None:
        super().__init__(f"interrupted: {result.case} attempt {result.index}")
        self.result = result
