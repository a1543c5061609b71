"""Leg separation, side assignment from world coordinates, and connected-component clean-up of calf class maps.

Sides never come from array halves. With two legs in the field of view, the side of each is the sign of its
centroid's world x relative to the midline between the two centroids (:func:`pipeline.core.geometry.side_of_world_x`).
With one leg, the same function decides from anatomy: the fibula lies lateral to the tibia, so the leg is on the side
towards which the fibula lies, ``side_of_world_x(x_fibula, x_tibia)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.core.config import load_config
from pipeline.core.errors import BadInputError
from pipeline.core.geometry import Side, side_of_world_x
from pipeline.core.labels import Registry
from pipeline.core.volume import Volume

#: A component holding less than this fraction of the foreground is not a leg.
MIN_LEG_FRACTION = 0.1


@dataclass
class Leg:
    side: Side
    mask: np.ndarray  # bool, on the class-map grid
    centroid_ras: np.ndarray
    method: str


@dataclass
class SideAssignment:
    legs: list[Leg]
    warnings: list[str] = field(default_factory=list)

    @property
    def sides(self) -> list[str]:
        return sorted(leg.side for leg in self.legs)


def _centroid(volume: Volume, mask: np.ndarray, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """World centroid of the True voxels of ``mask``, or of ``mask`` cut out of the volume at ``box`` (their voxel
    indices, found inside a bounding box, are the same integers in the same order as over the whole array, so the
    mean is too)."""
    if box is None:
        box = _box(mask)
        if box is None:
            return volume.voxel_to_world(np.full((1, 3), np.nan))[0]
        mask = mask[box]
    idx = np.argwhere(mask) + np.array([b.start for b in box])
    return volume.voxel_to_world(idx.mean(axis=0, keepdims=True))[0]


def component_sizes(lab: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of each of the components 1..n of a label array (``ndimage.label`` output), in one pass.

    >>> component_sizes(np.array([0, 1, 1, 2, 0, 1]), 2).tolist()
    [3, 1]
    """
    return np.bincount(lab.ravel(), minlength=n + 1)[1:n + 1]


def separate_legs(classes: Volume) -> list[np.ndarray]:
    """Masks of the (at most two) legs: the largest 3-D connected components of the foreground."""
    fg = np.asarray(classes.array) > 0
    lab, n = ndimage.label(fg)
    if n == 0:
        return []
    sizes = component_sizes(lab, n).astype(np.float64)
    order = np.argsort(sizes)[::-1]
    keep = [i + 1 for i in order[:2] if sizes[i] >= MIN_LEG_FRACTION * sizes.sum()]
    return [lab == k for k in keep]


@dataclass(frozen=True)
class BoneMinimum:
    """Least volume (ml) of the tibia and of the fibula in a leg for the leg's side to be decided from where the
    fibula lies (configs/default.yaml ``calf.min_tibia_for_side_ml`` / ``calf.min_fibula_for_side_ml``)."""

    tibia_ml: float
    fibula_ml: float

    @classmethod
    def from_config(cls, cfg: dict | None = None) -> BoneMinimum:
        calf = load_config("default")["calf"] if cfg is None else cfg
        return cls(float(calf["min_tibia_for_side_ml"]), float(calf["min_fibula_for_side_ml"]))

    def holds(self, tibia_voxels: int, fibula_voxels: int, voxel_volume_mm3: float) -> bool:
        """Whether both bones reach their least volume: n x voxel volume (mm3) / 1000 >= V_min (ml).

        >>> BoneMinimum(0.3, 0.075).holds(20, 5, 1.5 * 1.5 * 7.0), BoneMinimum(0.3, 0.075).holds(19, 5, 15.75)
        (True, False)
        """
        return (tibia_voxels * voxel_volume_mm3 / 1000.0 >= self.tibia_ml
                and fibula_voxels * voxel_volume_mm3 / 1000.0 >= self.fibula_ml)


def _anatomical_side(classes: Volume, leg: np.ndarray, reg: Registry, bones: BoneMinimum) -> Side | None:
    box = _box(leg)
    if box is None:
        return None
    arr, in_leg = np.asarray(classes.array)[box], leg[box]
    tib, fib = in_leg & (arr == reg.class_id("tibia")), in_leg & (arr == reg.class_id("fibula"))
    if not bones.holds(int(np.count_nonzero(tib)), int(np.count_nonzero(fib)), classes.voxel_volume_mm3):
        return None
    return side_of_world_x(_centroid(classes, fib, box)[0], _centroid(classes, tib, box)[0])


def assign_sides(classes: Volume, reg: Registry, bones: BoneMinimum | None = None) -> SideAssignment:
    """Find the legs of a class map and give each its patient side (``bones``: the least tibia and fibula for the
    anatomical check, from configs/default.yaml when not given)."""
    bones = BoneMinimum.from_config() if bones is None else bones
    masks = separate_legs(classes)
    if not masks:
        raise BadInputError("the segmentation found no leg in the calf series.", path=None,
                            fix="check that the calf Dixon series covers the calves (series roles in series.json).")
    out = SideAssignment([])
    if len(masks) == 2:
        cents = [_centroid(classes, m) for m in masks]
        midline = (cents[0][0] + cents[1][0]) / 2
        for m, c in zip(masks, cents):
            side = side_of_world_x(c[0], midline)
            out.legs.append(Leg(side, m, c, "centroid x relative to the midline between the legs"))
            anat = _anatomical_side(classes, m, reg, bones)
            if anat is not None and anat != side:
                out.warnings.append(f"the {side} leg (by position) has its fibula on the medial side; "
                                    "check the series orientation")
    else:
        side = _anatomical_side(classes, masks[0], reg, bones)
        if side is None:
            raise BadInputError("one leg in the field of view and its tibia/fibula were not found, so its side "
                                "cannot be decided.", path=None,
                                fix="include the tibia and fibula in the field of view, or image both legs.")
        out.legs.append(Leg(side, masks[0], _centroid(classes, masks[0]),
                            "one leg: fibula lateral to tibia (anatomical)"))
        out.warnings.append(f"only one leg in the field of view: the {side} leg")
    if len(out.legs) == 2 and out.legs[0].side == out.legs[1].side:
        raise BadInputError("both legs resolved to the same side.", path=None, fix="check the series geometry.")
    return out


def clean_components(classes: np.ndarray, leg_mask: np.ndarray, class_id: int, min_voxels: int) -> np.ndarray:
    """Mask of ``class_id`` in one leg keeping its largest component and any other component >= ``min_voxels``."""
    m = (classes == class_id) & leg_mask
    lab, n = ndimage.label(m)
    if n <= 1:
        return m
    sizes = component_sizes(lab, n)
    keep = np.zeros(n + 1, bool)
    keep[1:] = (sizes >= min_voxels) | (sizes == sizes.max())
    return keep[lab]


def _box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (array slices) of the True voxels of ``mask`` (None when there is none), from the mask's
    projections on each axis.

    >>> _box(np.pad(np.ones((2, 3), bool), 1))
    (slice(1, 3, None), slice(1, 4, None))
    """
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def sided_label_map(classes: Volume, reg: Registry, min_component_ml: float = 0.5) -> tuple[Volume, SideAssignment]:
    """Calf label map with ``<structure>_<side>`` ids (configs/labels.yaml) from a side-agnostic class map.

    The components of each class are cleaned inside the bounding box of that class in its leg: a class's voxels in
    a leg lie in that box, so its connected components, and which are kept, are those of the whole volume."""
    sides = assign_sides(classes, reg)
    arr = np.asarray(classes.array)
    out = np.zeros(arr.shape, np.int16)
    min_vox = max(1, int(round(min_component_ml * 1000.0 / classes.voxel_volume_mm3)))
    for leg in sides.legs:
        box = _box(leg.mask)
        if box is None:
            continue
        arr_box, leg_box, out_box = arr[box], leg.mask[box], out[box]
        in_leg = np.where(leg_box, arr_box, 0).astype(np.int32)
        for cid, cbox in enumerate(ndimage.find_objects(in_leg, max_label=len(reg.classes) - 1), start=1):
            if cbox is None:
                continue
            kept = clean_components(arr_box[cbox], leg_box[cbox], cid, min_vox)
            out_box[cbox][kept] = reg.sided_id(reg.classes[cid], leg.side)
    return classes.with_array(out), sides
