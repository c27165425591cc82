"""Where reprolab keeps caches and artifacts.

QEMU runs as ``libvirt-qemu`` under ``qemu:///system`` and cannot traverse ``/root`` (mode
0700), so anything a guest boots from (kernels, initramfs, disk images) lives under
``/var/lib/reprolab`` by default. Artifacts are the user's and default to the working tree.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE = Path("/var/lib/reprolab")


def state_root() -> Path:
    return Path(os.environ.get("REPROLAB_STATE", DEFAULT_STATE))


def cache_root() -> Path:
    """Content-addressed caches: kernels, images, downloaded sources."""
    path = Path(os.environ.get("REPROLAB_CACHE", state_root() / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    # Traversable by libvirt-qemu: the guest boots from files below here.
    path.chmod(0o755)
    return path


def runtime_root() -> Path:
    """Per-run scratch that the guest must read (copies of images, overlays)."""
    path = state_root() / "run"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def default_artifacts() -> Path:
    return Path(os.environ.get("REPROLAB_ARTIFACTS", "artifacts")).resolve()


def new_run_id() -> str:
    """A sortable, unique name for one run's artifact tree: nothing of an earlier run is
    overwritten when the same case runs again."""
    import secrets
    from datetime import datetime

    return f"run-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
