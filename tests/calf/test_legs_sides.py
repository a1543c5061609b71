"""Side assignment on constructed geometry: mirrored and rotated affines, one-leg studies, never array halves."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.calf.legs import assign_sides, sided_label_map
from pipeline.core.errors import BadInputError
from pipeline.core.labels import registry
from pipeline.core.volume import Volume

REG = registry("calf")
TIB, FIB, SOL = REG.class_id("tibia"), REG.class_id("fibula"), REG.class_id("soleus")


def _leg(arr: np.ndarray, cx: int, lateral: int) -> None:
    """A disc-shaped leg at column cx with the tibia medial and the fibula ``lateral`` (+1: +i, -1: -i) of it."""
    ii, jj = np.meshgrid(np.arange(arr.shape[0]), np.arange(arr.shape[1]), indexing="ij")
    leg = (ii - cx) ** 2 + (jj - 30) ** 2 < 15**2
    arr[leg] = SOL
    arr[((ii - (cx - 5 * lateral)) ** 2 + (jj - 36) ** 2 < 16)] = TIB
    arr[((ii - (cx + 8 * lateral)) ** 2 + (jj - 30) ** 2 < 5)] = FIB


def _classes(legs: list[tuple[int, int]], affine: np.ndarray) -> Volume:
    arr2d = np.zeros((120, 60), np.uint8)
    for cx, lat in legs:
        _leg(arr2d, cx, lat)
    return Volume(np.repeat(arr2d[:, :, None], 4, axis=2), affine)


RAS = np.diag([1.0, 1.0, 5.0, 1.0])  # array i increases towards patient right
LAS = np.diag([-1.0, 1.0, 5.0, 1.0])  # array i increases towards patient left (DICOM-like)


@pytest.mark.parametrize("affine,expected", [(RAS, {30: "left", 90: "right"}), (LAS, {30: "right", 90: "left"})])
def test_two_legs_sides_follow_world_x(affine, expected):
    # the fibula lies lateral, i.e. away from the other leg, whichever way the array runs
    cls = _classes([(30, -1), (90, 1)], affine)
    res = assign_sides(cls, REG)
    got = {int(round(np.argwhere(leg.mask).mean(0)[0])): leg.side for leg in res.legs}
    assert got == expected and not res.warnings


def test_rotated_affine_about_z():
    th = np.radians(170)  # nearly flipped in-plane: array halves would give the wrong answer
    aff = np.eye(4)
    aff[:3, :3] = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 5.0]])
    cls = _classes([(30, 1), (90, -1)], aff)
    res = assign_sides(cls, REG)
    for leg in res.legs:
        x = leg.centroid_ras[0]
        other = [lg for lg in res.legs if lg is not leg][0].centroid_ras[0]
        assert (leg.side == "right") == (x > other)


@pytest.mark.parametrize("lateral,expected", [(1, "right"), (-1, "left")])
def test_one_leg_side_from_anatomy(lateral, expected):
    cls = _classes([(60, lateral)], RAS)
    res = assign_sides(cls, REG)
    assert [leg.side for leg in res.legs] == [expected]
    assert "only one leg" in res.warnings[0]


def test_fibula_on_the_medial_side_is_flagged():
    res = assign_sides(_classes([(30, 1), (90, -1)], RAS), REG)
    assert len(res.warnings) == 2 and "medial" in res.warnings[0]


def test_one_leg_without_bones_is_refused():
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[10:30, 10:30] = SOL
    with pytest.raises(BadInputError, match="side"):
        assign_sides(Volume(arr, RAS), REG)


def test_sided_label_map_ids_and_small_islands():
    cls = _classes([(30, -1), (90, 1)], RAS)
    arr = cls.array.copy()
    arr[60, 55, 0] = SOL  # a one-voxel island between the legs is not a leg and is dropped
    labels, res = sided_label_map(cls.with_array(arr), REG, min_component_ml=0.01)
    ids = set(np.unique(labels.array)) - {0}
    assert REG.sided_id("soleus", "left") in ids and REG.sided_id("soleus", "right") in ids
    assert labels.array[60, 55, 0] == 0


def _reference_sided(classes: Volume, min_vox: int) -> np.ndarray:
    """Straightforward sided map: each class labelled over the whole volume within each leg's mask, its largest
    component and every component of at least ``min_vox`` voxels kept."""
    from scipy import ndimage

    arr = np.asarray(classes.array)
    out = np.zeros(arr.shape, np.int16)
    for leg in assign_sides(classes, REG).legs:
        for cid, name in enumerate(REG.classes[1:], start=1):
            lab, n = ndimage.label((arr == cid) & leg.mask)
            if n == 0:
                continue
            sizes = np.bincount(lab.ravel())[1:]
            for k, size in enumerate(sizes, start=1):
                if size >= min_vox or size == sizes.max():
                    out[lab == k] = REG.sided_id(name, leg.side)
    return out


def test_sided_label_map_equals_a_whole_volume_reference_on_noisy_class_maps():
    """The box-wise cleaning gives exactly what whole-volume labelling per class and leg gives, on class maps with
    scattered fragments of every class (inside and outside the legs)."""
    rng = np.random.default_rng(3)
    for trial in range(3):
        cls = _classes([(30, -1), (90, 1)], RAS)
        arr = cls.array.copy()
        idx = rng.integers(0, arr.size, 400)
        arr.flat[idx] = rng.integers(1, len(REG.classes), 400)
        noisy = cls.with_array(arr)
        labels, _ = sided_label_map(noisy, REG, min_component_ml=0.02 * (trial + 1))
        min_vox = max(1, int(round(0.02 * (trial + 1) * 1000.0 / noisy.voxel_volume_mm3)))
        assert np.array_equal(np.asarray(labels.array), _reference_sided(noisy, min_vox))
