"""pytest plugin used by ``reprolab match``: write every case's reprolab marker as JSON.

Loaded with ``-p`` into a ``pytest --collect-only`` subprocess, so test files are imported
the way pytest imports them (parametrized markers included) without running any guest and
without importing test code into the CLI process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

OUT_ENV = "REPROLAB_MATCH_OUT"


def _plain(value: Any) -> Any:
    """JSON-safe copy of a marker value (specs may hold paths or objects)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    cases = []
    for item in items:
        marker = item.get_closest_marker("reprolab")
        if marker is None:
            continue
        kw = dict(marker.kwargs)
        if marker.args and "expect" not in kw:
            kw["expect"] = marker.args[0]
        skip = next((m.kwargs.get("reason", "") for m in item.iter_markers("skipif")
                     if m.args and m.args[0]), None)
        cases.append({
            "nodeid": item.nodeid,
            "name": item.name,
            "path": str(item.path),
            "kernel": _plain(kw.get("kernel", "stock")),
            "mode": _plain(kw.get("mode") or "regression"),
            "expect": _plain(kw.get("expect")),
            "skip": skip,
            "doc": (getattr(getattr(item, "function", None), "__doc__", None) or "").strip(),
        })
    Path(out).write_text(json.dumps(cases))
