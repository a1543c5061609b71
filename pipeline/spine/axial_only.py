"""The discs of a lumbar study that has axial stacks and no sagittal image.

Levels are counted on a sagittal image (from the sacrum, or from a reader's anchor on the sagittal numbering;
:mod:`pipeline.spine.levels`). Without one the discs the axial stacks show are still found and measured, under
positional names and never a guessed level:

* a disc is made of the connected components of the network's disc class in one stack that hold at least
  ``spine.min_disc_ml`` and ``spine.min_component_fraction_of_largest`` of the stack's largest piece, joined where
  they lie at one height (centres closer than ``spine.disc_merge_mm`` along the stack's normal: a disc labelled in
  pieces; two discs lie a disc spacing apart along the spine);
* a disc seen by two stacks (centres at heights closer than ``spine.disc_merge_mm``) is taken from the stack that
  holds more of it;
* the discs are numbered by world height from the lowest upwards (``disc_1``, ``disc_2`` ...). The stacks need not
  cover neighbouring discs, so the numbers order the discs found and say nothing of the levels between them;
* a disc's centre is the centroid of its voxels and its plane the stack's slice plane: axial stacks are prescribed
  parallel to the disc, and without a sagittal image the tilt between the two is not known, so areas are not
  corrected for it (flagged);
* a disc whose widest cross-section lies on the first or last slice of its stack may be cut by the stack's end
  (its mid-plane may lie beyond it), and its centroid then lies off its mid-plane (``cut``; the spine QC asks for
  review). Axial stacks of 3-5 slices through a disc often show it on every slice: that alone is not a cut.

Pure: class maps in, :class:`AxialDisc` lists and a :class:`~pipeline.spine.levels.LevelResult` out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.labels import Registry
from pipeline.core.volume import Volume
from pipeline.spine import canal
from pipeline.spine.levels import Disc, LevelResult, components

#: ``levels.json`` ``method`` and ``spine.levels_method`` of a study measured on its axial stacks alone
AXIAL_ONLY_METHOD = "axial stacks only: discs numbered upwards by height (no sagittal image to count levels on)"

#: the flags of every such study (``spine.levels_flags``)
AXIAL_ONLY_FLAGS = (
    "no sagittal image: the levels cannot be counted, so the discs of the axial stacks are numbered from the lowest "
    "upwards (disc_1 ...) and the numbers need not be neighbouring levels",
    "no sagittal image: each disc's plane is taken as its axial stack's slice plane (areas not corrected for a tilt "
    "between them) and the foramina, measured on sagittal slices, are not measured",
)


@dataclass
class AxialDisc:
    """One disc found on an axial stack: its positional name, the stack (index into the stacks given), the centroid
    and the unit normal of its plane (world RAS, pointing cranially), the volume of it in the stack (mL), and
    whether its widest cross-section lies on the stack's first or last slice (``cut``)."""

    level: str
    stack: int
    center_ras: np.ndarray
    normal_ras: np.ndarray
    volume_ml: float
    cut: bool = False

    def as_disc(self, labels: Volume) -> Disc:
        """The :class:`~pipeline.spine.levels.Disc` the canal measurements take, with its mask on ``labels``' grid
        (the stack's label map)."""
        return Disc(self.level, np.zeros(labels.shape, bool), self.center_ras, self.normal_ras)

    def as_json(self, roles: Sequence[str]) -> dict[str, Any]:
        """As ``levels.json`` keeps it (``axial_discs``), the stack named by its role."""
        return {"stack": roles[self.stack], "center_ras": [round(float(v), 3) for v in self.center_ras],
                "normal_ras": [round(float(v), 6) for v in self.normal_ras], "volume_ml": round(self.volume_ml, 2),
                "cut": self.cut}

    @classmethod
    def from_json(cls, level: str, d: Mapping[str, Any], roles: Sequence[str]) -> AxialDisc:
        """The inverse of :meth:`as_json`; ``roles`` are the stacks' roles in the order of the stacks given."""
        return cls(level, list(roles).index(d["stack"]), np.asarray(d["center_ras"], float),
                   np.asarray(d["normal_ras"], float), float(d["volume_ml"]), bool(d.get("cut", False)))


def cranial_normal(volume: Volume) -> np.ndarray:
    """The unit normal of ``volume``'s slice plane (its acquisition axis), pointing cranially (world +S)."""
    n = canal.slice_normal(volume, canal.acquisition_axis(volume))
    return -n if n[2] < 0 else n


def stack_discs(classes: Volume, reg: Registry, cfg: Mapping[str, Any], stack: int) -> list[AxialDisc]:
    """The disc pieces of one axial stack's class map large enough to be discs (unnamed: ``level`` empty)."""
    mask = np.asarray(classes.array) == reg.class_id("disc")
    voxel_ml = classes.voxel_volume_mm3 / 1000.0
    pieces = components(mask, float(cfg["min_disc_ml"]) / voxel_ml, float(cfg["min_component_fraction_of_largest"]))
    normal = cranial_normal(classes)
    axis = canal.acquisition_axis(classes)
    out = []
    for p in _at_one_height(pieces, classes, normal, float(cfg["disc_merge_mm"])):
        area = np.count_nonzero(p, axis=tuple(a for a in range(3) if a != axis))
        widest = int(np.argmax(area))
        out.append(AxialDisc("", stack, classes.voxel_to_world(np.argwhere(p)).mean(axis=0), normal,
                             float(np.count_nonzero(p)) * voxel_ml, cut=widest in (0, len(area) - 1)))
    return out


def _at_one_height(pieces: list[np.ndarray], volume: Volume, normal: np.ndarray, merge_mm: float
                   ) -> list[np.ndarray]:
    """The pieces of disc class of one stack joined where they lie at one height along the disc normal (centres
    closer than ``merge_mm`` along it, taken largest first): one disc that the network labelled in pieces. Two discs
    are a disc spacing (25-40 mm) apart along the spine, whatever their offset in the slice plane."""
    heights = [float(volume.voxel_to_world(np.argwhere(p)).mean(axis=0) @ normal) for p in pieces]
    groups: list[tuple[float, np.ndarray]] = []
    for k in sorted(range(len(pieces)), key=lambda i: -int(np.count_nonzero(pieces[i]))):
        near = next((g for g, (h, _) in enumerate(groups) if abs(heights[k] - h) < merge_mm), None)
        if near is None:
            groups.append((heights[k], pieces[k].copy()))
        else:
            groups[near][1][pieces[k]] = True
    return [mask for _, mask in groups]


def find_axial_discs(stacks: Sequence[Volume], reg: Registry, cfg: Mapping[str, Any]) -> list[AxialDisc]:
    """The discs of the axial stacks' class maps (``cfg``: the ``spine`` section of the configuration), one per
    disc however many stacks show it, numbered upwards by world height (``disc_1`` is the lowest)."""
    found = sorted((d for k, v in enumerate(stacks) for d in stack_discs(v, reg, cfg, k)),
                   key=lambda d: -d.volume_ml)
    kept: list[AxialDisc] = []
    for d in found:  # of a disc two stacks show, the stack holding more of it is kept
        if all(abs(float((d.center_ras - k.center_ras) @ k.normal_ras)) >= float(cfg["disc_merge_mm"]) for k in kept):
            kept.append(d)
    kept.sort(key=lambda d: d.center_ras[2])
    for n, d in enumerate(kept, start=1):
        d.level = f"disc_{n}"
    return kept


def axial_level_result(discs: Sequence[AxialDisc], stacks: Sequence[Volume], flags: Sequence[str] = ()
                       ) -> LevelResult:
    """The :class:`~pipeline.spine.levels.LevelResult` of a study without a sagittal image: no label map, the
    discs under their positional names (for :func:`~pipeline.spine.levels.name_axial_discs`), confidence 0 (no
    level is named) and the flags of :data:`AXIAL_ONLY_FLAGS` with ``flags``."""
    return LevelResult(discs={d.level: d.as_disc(stacks[d.stack]) for d in discs}, labels=None,
                       method=AXIAL_ONLY_METHOD, confidence=0.0, flags=[*AXIAL_ONLY_FLAGS, *flags])
