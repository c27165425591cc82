"""Triage: a vmcore into a dossier (panic message, every CPU's stack, blocked tasks).

Public entry point: :func:`reprolab.triage.vmcore.write_dossier`: report.json + report.md
from a vmcore, with or without debug info.

Module map: vmcore (drgn), rawdump (what a dump says without debug info, the one ELF
program-header walk), kdump (flattened kdump to sparse ELF), opendump (a dump handed in by a
user), stacks (guilty frames of the vmcore's stacks), dossier (markdown). Console logs are
:mod:`reprolab.detect`'s.
"""
