"""Size and shape figures of the code base: lines per module, the longest functions, and the import graph's cycles.

    .venv/bin/python scripts/code_figures.py [--longest 10]

Complements `ruff check --select C901` (complexity, configured in pyproject.toml) and the architecture test
(tests/test_architecture.py, whose import graph this script reuses).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_architecture import PKG, find_cycle, import_graph  # noqa: E402


def lines_per_module() -> list[tuple[int, str]]:
    """(lines, path) of every module of pipeline/, largest first."""
    return sorted(((len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(ROOT)))
                   for p in PKG.rglob("*.py")), reverse=True)


def longest_functions(n: int) -> list[tuple[int, str]]:
    """(lines, "path:line name") of the ``n`` longest functions and methods of pipeline/ (decorators excluded)."""
    found = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{p.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--longest", type=int, default=10, help="how many of the longest functions to list")
    args = ap.parse_args()
    modules = lines_per_module()
    print(f"{len(modules)} modules, {sum(n for n, _ in modules)} lines")
    for n, path in modules:
        print(f"{n:6d}  {path}")
    print(f"\nthe {args.longest} longest functions (lines):")
    for n, where in longest_functions(args.longest):
        print(f"{n:6d}  {where}")
    graph = import_graph()
    cycle = find_cycle(graph)
    print(f"\nimport graph: {len(graph)} modules, {sum(len(v) for v in graph.values())} imports, "
          + ("no cycle" if cycle is None else "cycle " + " -> ".join(cycle)))
    return 0 if cycle is None else 1


if __name__ == "__main__":
    sys.exit(main())
