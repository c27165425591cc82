"""Crash triage: console streams into events, logs into titled reports, vmcores into dossiers.

Public entry points:

- :class:`reprolab.triage.parser.ConsoleParser` / :class:`~reprolab.triage.parser.Event`:
  feed console bytes as they arrive, get one event per crash-marker line, at once.
- :func:`reprolab.triage.report.parse_log` -> :class:`~reprolab.triage.report.CrashReport`:
  the first crash of a whole log, titled in syzkaller's convention.
- :class:`reprolab.triage.signature.Signature`: ``kind:frame``, what attempts are grouped by.
- :func:`reprolab.triage.vmcore.write_dossier`: report.json + report.md from a vmcore, with
  or without debug info.

Module map: rules/oopses (the title rules), extract (rule matching, frame choice), titles
(placeholders, types), kinds (event vocabulary), demangle (Rust frames), rawdump (what a dump
says without debug info), dossier (markdown), accuracy (corpus figures).
"""
