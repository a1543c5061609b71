"""The label registry: one list of label names and ids, read from ``configs/labels.yaml``.

Two views exist for each anatomy:

* **classes** are what a network predicts (side-agnostic for the calf, level-agnostic for the spine), ids 0..N-1
  with 0 the background;
* **labels** are what output label maps hold: calf classes split into ``<name>_left`` / ``<name>_right``, spine
  vertebrae and discs named by level. Ids are consecutive from 1. A structure with ``positions`` (``prefix``,
  ``count``) also has unnamed labels ``<prefix>_1`` .. ``<prefix>_<count>`` (vertebrae and discs of a spine whose
  levels cannot be named, numbered from the bottom of the field of view); their ids follow every other label, so
  adding them leaves the ids of the named labels unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.geometry import SIDES, Side
from pipeline.core.volume import Volume


@dataclass(frozen=True)
class LabelInfo:
    """One output label: id, full name, the class it comes from, and attributes."""

    id: int
    name: str
    structure: str
    side: Side | None = None
    level: str | None = None
    kind: str = ""
    group: str | None = None
    abbrev: str | None = None
    color: str = "#888888"


@dataclass(frozen=True)
class Registry:
    """Classes (network output) and labels (label-map ids) of one anatomy."""

    anatomy: str
    classes: tuple[str, ...]  # index = class id; classes[0] == "background"
    labels: tuple[LabelInfo, ...]
    structures: dict[str, dict[str, Any]]
    region: dict[str, str] | None = None  # coded anatomic region of every structure (labels.yaml ``region``)

    def label_id(self, name: str) -> int:
        for lab in self.labels:
            if lab.name == name:
                return lab.id
        raise KeyError(f"unknown {self.anatomy} label '{name}'; known: {', '.join(lab.name for lab in self.labels)}")

    def by_id(self) -> dict[int, LabelInfo]:
        return {lab.id: lab for lab in self.labels}

    def code_of(self, label: LabelInfo) -> dict[str, str] | None:
        """The coded concept (``scheme``, ``value``, ``meaning``) of an output label: its level's code where the
        structure gives ``level_codes``, else the structure's ``code``, else None."""
        s = self.structures.get(label.structure, {})
        return (s.get("level_codes") or {}).get(label.level or "") or s.get("code")

    def class_id(self, structure: str) -> int:
        try:
            return self.classes.index(structure)
        except ValueError as exc:
            raise KeyError(f"unknown {self.anatomy} class '{structure}'; known: {', '.join(self.classes)}") from exc

    def class_map(self, labels: Volume) -> Volume:
        """The network classes of an output label map (sides and levels dropped), on the same grid."""
        lut = np.zeros(len(self.labels) + 1, np.uint8)
        for lab in self.labels:
            lut[lab.id] = self.class_id(lab.structure)
        return labels.with_array(lut[np.asarray(labels.array, np.int64)])

    def sided_id(self, structure: str, side: Side) -> int:
        """Output id of ``structure`` on ``side`` (calf)."""
        return self.label_id(f"{structure}_{side}")

    @property
    def muscles(self) -> tuple[str, ...]:
        return tuple(n for n, s in self.structures.items() if s.get("kind") == "muscle")

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Muscle groups: group name -> member structures (e.g. ``triceps_surae``)."""
        out: dict[str, list[str]] = {}
        for name, s in self.structures.items():
            for g in s.get("groups", []):
                out.setdefault(g, []).append(name)
        return {k: tuple(v) for k, v in out.items()}

    def members(self) -> dict[str, tuple[str, ...]]:
        """Every structure and muscle group -> the structures it is made of (a structure: itself), for judging a
        group by its members' segmentation QC."""
        return {**{name: (name,) for name in self.structures}, **self.groups()}


def _check_consecutive(ids: list[int], what: str, path: Path) -> None:
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise ConfigError(f"{what} label ids must be consecutive from 1, got {sorted(ids)}.", path=path,
                          fix="renumber the labels 1..N without gaps or repeats.")


def _calf_variants(name: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    """A calf structure's output labels: one per side (``soleus_left``, ``soleus_right``)."""
    return [{"name": f"{name}_{side}", "side": side, "group": (s.get("groups") or [None])[0]} for side in SIDES]


def _spine_variants(name: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    """A spine structure's output labels: one per level (``disc_L4_L5``) or the structure alone (``dural_sac``)."""
    return [{"name": f"{name}_{level.replace('-', '_')}" if level else name, "level": level}
            for level in s.get("levels") or [None]]


def _positional_variants(name: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    """A structure's unnamed positional labels (``disc_1`` .. ``disc_12``); the label's level is its name."""
    pos = s.get("positions")
    if not pos:
        return []
    return [{"name": f"{pos['prefix']}_{k}", "level": f"{pos['prefix']}_{k}"} for k in range(1, int(pos["count"]) + 1)]


def _build(anatomy: str, cfg: dict, path: Path,
           variants: Callable[[str, dict[str, Any]], list[dict[str, Any]]]) -> Registry:
    """The registry of ``anatomy``: classes in the order of ``cfg["structures"]``, labels numbered from 1 (the
    positional labels last)."""
    structures: dict[str, dict[str, Any]] = {s["name"]: s for s in cfg["structures"]}
    labels: list[LabelInfo] = []
    for make in (variants, _positional_variants):
        for name, s in structures.items():
            for v in make(name, s):
                labels.append(LabelInfo(id=len(labels) + 1, structure=name, kind=s.get("kind", ""),
                                        abbrev=s.get("abbrev"), color=s.get("color", "#888888"), **v))
    _check_consecutive([lab.id for lab in labels], anatomy, path)
    return Registry(anatomy, ("background", *structures), tuple(labels), structures, cfg.get("region"))


@lru_cache(maxsize=8)
def _registry(anatomy: str, path_str: str) -> Registry:
    cfg = load_config("labels", path_str)
    path = Path(path_str)
    if anatomy == "calf":
        return _build("calf", cfg["calf"], path, _calf_variants)
    if anatomy == "spine":
        return _build("spine", cfg["spine"], path, _spine_variants)
    raise KeyError(f"unknown anatomy '{anatomy}' (calf or spine)")


def registry(anatomy: str, path: str | Path | None = None) -> Registry:
    """The label registry of ``anatomy`` (``"calf"`` or ``"spine"``) from configs/labels.yaml (or ``path``)."""
    from pipeline.core.config import config_dir

    return _registry(anatomy, str(path if path is not None else config_dir() / "labels.yaml"))
