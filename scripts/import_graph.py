#!/usr/bin/env python3
"""The import graph of ``reprolab/``: modules, cross-package imports, import cycles.

Stdlib only (``ast``), so anyone can run it on any checkout without installing anything:

    python3 scripts/import_graph.py            # table
    python3 scripts/import_graph.py --json     # the same numbers, plus every edge and cycle

Why it exists: a restructuring that claims to make the layers read better should show it in
numbers a reviewer can recompute (issue 14). Definitions:

- a module is a ``.py`` file under ``reprolab/`` (packages count by their ``__init__``);
- its package is ``reprolab.<dir>`` for a subpackage, ``reprolab`` for a flat root module;
- an edge is "module A imports module B" (any import that runs, top-level or inside a
  function; ``if TYPE_CHECKING:`` imports never run and are left out);
  ``from reprolab.x import name`` points at ``reprolab.x.name`` when that is a module;
- a cross-package edge joins modules of two different packages; edges from a package's own
  ``__init__`` to its modules count as inside it;
- a layer violation is the core importing the plugin, the CLI or ``commands/``, or
  ``virt/`` importing ``guest/``;
- cycles are the strongly connected components (more than one module) of the graph of
  top-level imports (the ones Python runs at import time) and, separately, of all imports;
  package cycles are the components of the package graph (flat root modules count as one
  package, ``reprolab``), and again with the root modules left out.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = "reprolab"


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str, packages: set[str]) -> str:
    """The subpackage a module lives in (``reprolab`` for flat root modules)."""
    parts = module.split(".")
    if len(parts) >= 2 and ".".join(parts[:2]) in packages:
        return ".".join(parts[:2])
    return ROOT


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path, module: str, modules: set[str]) -> tuple[set[str], set[str]]:
    """(top-level imports, all imports) of one file, as reprolab module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    top: set[str] = set()
    every: set[str] = set()

    def targets(node: ast.AST) -> Iterable[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_pkg, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in modules else base

    def nearest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, depth: int, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in targets(child):
                    hit = nearest(name)
                    if hit is not None and hit != module and not type_only:
                        every.add(hit)
                        if depth == 0:
                            top.add(hit)
            guarded = type_only or (isinstance(child, ast.If)
                                    and "TYPE_CHECKING" in ast.unparse(child.test))
            inner = depth + isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                       | ast.Lambda)
            visit(child, inner, guarded)

    visit(tree, 0, False)
    return top, every


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


#: The front ends: the core (everything else) never imports them.
FRONT = ("reprolab.pytest_plugin", "reprolab.cli", "reprolab.commands", "reprolab.hookspecs")


def _in(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _upward(importer: str, imported: str) -> bool:
    """An import against the layers: the core importing a front end, or ``virt/`` importing
    ``guest/`` (guests are built on libvirt domains, not the other way)."""
    if _in(imported, FRONT) and not _in(importer, FRONT):
        return True
    return _in(importer, ("reprolab.virt",)) and _in(imported, ("reprolab.guest",))


def analyse(base: Path) -> dict[str, object]:
    files = {module_name(p, base): p for p in sorted((base / ROOT).rglob("*.py"))}
    modules = set(files)
    packages = {m for m, p in files.items() if p.name == "__init__.py" and m != ROOT}
    top: dict[str, set[str]] = {}
    every: dict[str, set[str]] = {}
    for mod, path in files.items():
        top[mod], every[mod] = imports_of(path, mod, modules)
    cross = sorted((a, b) for a, bs in every.items() for b in bs
                   if package_of(a, packages) != package_of(b, packages))
    pkg_graph: dict[str, set[str]] = {}
    for a, b in cross:
        pkg_graph.setdefault(package_of(a, packages), set()).add(package_of(b, packages))
        pkg_graph.setdefault(package_of(b, packages), set())
    lines = {m: len(p.read_text().splitlines()) for m, p in files.items()}
    flat = sorted(m for m in modules if package_of(m, packages) == ROOT and m != ROOT)
    violations = sorted(f"{a} -> {b}" for a, bs in every.items() for b in bs
                        if _upward(a, b))
    return {
        "modules": len(modules),
        "packages": len(packages),
        "flat_root_modules": len(flat),
        "imports": sum(len(v) for v in every.values()),
        "cross_package_imports": len(cross),
        "cycles_top_level": components(top),
        "cycles_all_imports": components(every),
        "package_cycles": components(pkg_graph),
        "subpackage_cycles": components({k: v - {ROOT} for k, v in pkg_graph.items()
                                         if k != ROOT}),
        "layer_violations": violations,
        "modules_over_400_lines": sorted(m for m, n in lines.items() if n > 400),
        "flat": flat,
        "cross_package_edges": [f"{a} -> {b}" for a, b in cross],
        "package_edges": {k: sorted(v) for k, v in sorted(pkg_graph.items())},
    }


def table(data: dict[str, object]) -> str:
    def n(key: str) -> int:
        value = data[key]
        return len(value) if isinstance(value, list) else int(value)  # type: ignore[arg-type]

    rows = [
        ("modules", n("modules")),
        ("packages", n("packages")),
        ("flat root modules", n("flat_root_modules")),
        ("imports (module -> module)", n("imports")),
        ("cross-package imports", n("cross_package_imports")),
        ("import cycles (top-level imports)", n("cycles_top_level")),
        ("import cycles (all imports)", n("cycles_all_imports")),
        ("package cycles", n("package_cycles")),
        ("package cycles, root modules left out", n("subpackage_cycles")),
        ("layer violations", n("layer_violations")),
        ("modules over 400 lines", n("modules_over_400_lines")),
    ]
    out = [f"{name:<36} {value:>6}" for name, value in rows]
    out.extend(f"layer violation: {v}" for v in data["layer_violations"])  # type: ignore[attr-defined]
    for key in ("cycles_top_level", "cycles_all_imports", "package_cycles",
                "subpackage_cycles"):
        for comp in data[key]:  # type: ignore[attr-defined]
            out.append(f"{key}: {' <-> '.join(comp)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="checkout holding reprolab/ (default: this one)")
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args(argv)
    data = analyse(args.root)
    print(json.dumps(data, indent=2) if args.json else table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
