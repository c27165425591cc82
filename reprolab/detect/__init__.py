"""Detection: console bytes into events, a console log into a titled crash report.

Public entry points:

- :class:`reprolab.detect.parser.ConsoleParser` / :class:`~reprolab.detect.parser.Event`:
  feed console bytes as they arrive, get one event per crash-marker line, at once.
- :class:`reprolab.detect.events.GuestEvent`: an event on an attempt's timeline (console,
  libvirt or the harness's own).
- :func:`reprolab.detect.report.parse_log` -> :class:`~reprolab.detect.report.CrashReport`:
  the first crash of a whole log, titled in syzkaller's convention.
- :class:`reprolab.detect.signature.Signature`: ``kind:frame``, what attempts are grouped by.

Module map: rules/oopses (the title rules), extract (rule matching, frame choice), titles
(placeholders, types), kinds (event vocabulary), lines (line cleaning), demangle (Rust
frames), logfile (long logs, linear time), accuracy (corpus figures). What a vmcore says is
:mod:`reprolab.triage`'s job.
"""
