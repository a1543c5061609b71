"""The three sample studies through every stage give the stored reference outputs (tests/data/reference_outputs,
made by ``scripts/make_reference_outputs.py``): every stored value is still there and equal (numbers to 1e-9
relative, for floating-point summation order); keys, rows, columns and files added since are allowed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.layout import StudyDir
from pipeline.workflow import stages

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "reference_outputs"
#: tidy tables: the columns that name a row (the others are its values)
TABLE_KEYS = {"calf/measurements.csv": ("side", "structure", "metric"), "calf/legs.csv": ("side", "metric"),
              "calf/asymmetry.csv": ("structure", "metric"), "calf/slices.csv": ("z_mm", "side", "muscle"),
              "spine/measurements.csv": ("level", "side", "metric")}


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _same(ref: Any, new: Any) -> bool:
    a, b = _number(ref), _number(new)
    if a is not None and b is not None and not isinstance(ref, bool) and not isinstance(new, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return ref == new


def json_differences(ref: Any, new: Any, where: str = "") -> list[str]:
    """Where ``new`` lacks or changes a value of ``ref`` (keys only in ``new`` are fine).

    >>> json_differences({"a": 1.0, "b": [1, 2]}, {"a": 1.0, "b": [1, 2], "c": 3})
    []
    >>> json_differences({"a": 1.0, "b": {"x": "y"}}, {"a": 1.5, "b": {}})
    ['a: 1.0 -> 1.5', 'b.x: missing']
    """
    if isinstance(ref, dict):
        if not isinstance(new, dict):
            return [f"{where or '<top>'}: {type(new).__name__} instead of an object"]
        out = []
        for k, v in ref.items():
            key = f"{where}.{k}" if where else str(k)
            out += json_differences(v, new[k], key) if k in new else [f"{key}: missing"]
        return out
    if isinstance(ref, list):
        if not isinstance(new, list) or len(new) != len(ref):
            return [f"{where}: {ref!r} -> {new!r}"]
        return [d for i, (a, b) in enumerate(zip(ref, new)) for d in json_differences(a, b, f"{where}[{i}]")]
    return [] if _same(ref, new) else [f"{where}: {ref!r} -> {new!r}"]


def table_differences(ref_path: Path, new_path: Path, keys: tuple[str, ...]) -> list[str]:
    """Rows or cells of the reference table that are missing or changed in the new one."""
    def rows(p: Path) -> dict[tuple[str, ...], dict[str, str]]:
        with open(p, newline="", encoding="utf-8") as fh:
            return {tuple(r[k] for k in keys): r for r in csv.DictReader(fh)}

    ref, new = rows(ref_path), rows(new_path)
    out = []
    for key, row in ref.items():
        if key not in new:
            out.append(f"{key}: row missing")
            continue
        out += [f"{key} {c}: {v!r} -> {new[key].get(c)!r}" for c, v in row.items() if not _same(v, new[key].get(c))]
    return out


def reference_differences(ref: Path, out: Path) -> list[str]:
    """Every difference between the stored reference of a study and the output folder ``out``."""
    found = []
    for path in sorted(p for p in ref.rglob("*") if p.is_file()):
        rel = path.relative_to(ref).as_posix()
        new = out / rel
        if not new.exists():
            found.append(f"{rel}: file missing")
        elif rel in TABLE_KEYS:
            found += [f"{rel} {d}" for d in table_differences(path, new, TABLE_KEYS[rel])]
        else:
            found += [f"{rel} {d}" for d in json_differences(json.loads(path.read_text(encoding="utf-8")),
                                                             json.loads(new.read_text(encoding="utf-8")))]
    return found


@pytest.mark.parametrize("name", ["nmh_case", "control", "myopathic"])
def test_sample_study_outputs_equal_the_stored_reference(name: str, tmp_path: Path):
    out = StudyDir(tmp_path / name)
    assert stages.run(ROOT / "sample_data" / name, out.root) == 0
    differences = reference_differences(REFERENCE / name, out.root)
    assert not differences, (f"{len(differences)} differences from tests/data/reference_outputs/{name} (if the "
                             "change is meant, rerun scripts/make_reference_outputs.py):\n"
                             + "\n".join(differences[:40]))


def test_the_comparison_allows_added_keys_and_rows_but_not_changed_values(tmp_path: Path):
    ref, new = tmp_path / "ref.csv", tmp_path / "new.csv"
    ref.write_text("side,structure,metric,value\nleft,soleus,volume_ml,100.5\n")
    new.write_text("side,structure,metric,value,qc\nleft,soleus,volume_ml,100.5,pass\nleft,x,y,1\n")
    assert table_differences(ref, new, ("side", "structure", "metric")) == []
    new.write_text("side,structure,metric,value\nleft,soleus,volume_ml,100.6\n")
    assert table_differences(ref, new, ("side", "structure", "metric")) == [
        "('left', 'soleus', 'volume_ml') value: '100.5' -> '100.6'"]
