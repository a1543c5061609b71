"""The dependency direction of DESIGN.md, checked on the source: stage packages import only pipeline.core (synth may
also import io); only workflow and cli combine stages; core imports no other pipeline package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pipeline"
STAGES = ("io", "synth", "segment", "calf", "spine", "rules", "report")
ALLOWED = {stage: {"core"} for stage in STAGES} | {"core": set(), "synth": {"core", "io"}}


def _pipeline_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "pipeline" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_stage_packages_respect_dependency_direction(package: str):
    offenders = []
    for path in sorted((PKG / package).rglob("*.py")):
        bad = _pipeline_imports(path) - ALLOWED[package] - {package}
        if bad:
            offenders.append(f"{path.relative_to(PKG.parent)} imports pipeline.{', pipeline.'.join(sorted(bad))}")
    assert not offenders, "dependency direction violated:\n" + "\n".join(offenders)


def test_doctests_of_core_pass():
    import doctest
    import importlib

    failures = 0
    for path in sorted((PKG / "core").glob("*.py")):
        mod = importlib.import_module(f"pipeline.core.{path.stem}" if path.stem != "__init__" else "pipeline.core")
        failures += doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE).failed
    assert failures == 0
