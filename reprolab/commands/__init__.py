"""Subcommands of the ``reprolab`` CLI, one module each.

Every module named here exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit code.
"""

COMMANDS: list[str] = [
    "doctor",
    "run",
    "bisect",
    "build_kernel",
    "capacity",
    "image",
    "triage",
    "repro",
    "match",
]
