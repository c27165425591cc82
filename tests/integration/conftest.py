"""Integration tests boot real guests under the local libvirtd (TCG here)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from vmtools import URI

from reprolab.run.session import Session


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = Session(uri=URI, artifacts=tmp_path / "artifacts")
    yield s
    s.close()
