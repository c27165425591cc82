"""The shape of the package holds: the core never imports a front end, virt/ never guest/.

Measured by scripts/import_graph.py (stdlib ast), the same tool that gives the import graph's
numbers, so the test and the numbers cannot disagree.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _graph_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_no_layer_violations() -> None:
    data = _graph_tool().analyse(ROOT)
    assert data["layer_violations"] == []
    assert data["cycles_top_level"] == []
    # Between subpackages the layers form no cycle (kernel/ <- triage/, virt/ <- guest/, ...).
    assert data["subpackage_cycles"] == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """A core module importing the plugin, and virt/ importing guest/, are both caught."""
    tool = _graph_tool()
    for rel, text in {
        "reprolab/__init__.py": "",
        "reprolab/pytest_plugin.py": "",
        "reprolab/cli.py": "",
        "reprolab/commands/__init__.py": "",
        "reprolab/commands/repro.py": "from reprolab.run import loop\n",
        "reprolab/guest/__init__.py": "",
        "reprolab/guest/handle.py": "from reprolab.virt import domain\n",
        "reprolab/virt/__init__.py": "",
        "reprolab/virt/domain.py": "from reprolab.guest.handle import Guest\n",
        "reprolab/run/__init__.py": "",
        "reprolab/run/loop.py": "def f():\n    from reprolab.pytest_plugin import _judge\n",
        "reprolab/run/record.py": "import reprolab.cli\nfrom reprolab.commands import repro\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert tool.analyse(tmp_path)["layer_violations"] == [
        "reprolab.run.loop -> reprolab.pytest_plugin",
        "reprolab.run.record -> reprolab.cli",
        "reprolab.run.record -> reprolab.commands.repro",
        "reprolab.virt.domain -> reprolab.guest.handle",
    ]
