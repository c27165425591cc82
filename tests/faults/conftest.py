"""The fault-injection suite: real guests, real faults, and the host put back afterwards."""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import daemons
import pytest

from reprolab.run.session import Session


@pytest.fixture(autouse=True, scope="module")
def _daemons_restored() -> Iterator[None]:
    """Whatever a test did to libvirtd or virtlogd, later tests (and helpers) find them up."""
    daemons.ensure_running()
    try:
        yield
    finally:
        daemons.ensure_running()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = Session(uri=daemons.URI, artifacts=tmp_path / "artifacts")
    try:
        yield s
    finally:
        daemons.ensure_running()
        s.close()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """What a fault test found (classified right? leaks?), for bench/bench_faults.py.

    Tests fill it before their final asserts, so a failing test still says how far it got;
    written only when FAULTS_RECORD names a JSON-lines file.
    """
    found: dict[str, object] = {"classified": False, "leaks": None}
    yield found
    path = os.environ.get("FAULTS_RECORD")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": request.node.nodeid, **found}, default=str) + "\n")
