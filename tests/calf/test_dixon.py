"""Two-point Dixon helpers (pipeline.calf.dixon)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from pipeline.calf.dixon import outer_ring_ff_pct
from pipeline.core.volume import Volume


def _whole_slice_ring_ff(water: np.ndarray, fat: np.ndarray, px: tuple[float, float],
                         depth_mm: tuple[float, float]) -> float:
    """The subcutaneous ring's median FF computed on whole slices: the straightforward reference."""
    total = water + fat
    body = total > threshold_otsu(total[::2, ::2, ::2])
    values = []
    for k in range(body.shape[2]):
        b = ndimage.binary_fill_holes(ndimage.binary_opening(body[:, :, k]))
        if np.count_nonzero(b) < 100:
            continue
        depth = ndimage.distance_transform_edt(b, sampling=px)
        ring = (depth > depth_mm[0]) & (depth <= depth_mm[1])
        values.append(fat[:, :, k][ring] / np.maximum(total[:, :, k][ring], 1e-6))
    return 100.0 * float(np.median(np.concatenate(values)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ring_fat_fraction_in_the_body_box_equals_the_whole_slices(seed: int):
    """Two legs (fat rim, muscle, a dark marrow hole), one reaching the array's edge, in a wide field of air: the
    ring's median FF computed inside the body's box equals that of whole slices exactly."""
    rng = np.random.default_rng(seed)
    shape = (120, 90, 9)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    water, fat = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for cx, cy, r in ((30 + seed, 45, 18), (112, 40 + seed, 20)):  # the second leg runs off the array's edge
        d = np.hypot(x - cx, y - cy)[:, :, None].repeat(shape[2], axis=2)
        leg, rim, hole = d < r, (d < r) & (d >= r - 4), d < 4
        water[leg & ~rim] = 90.0
        fat[leg & ~rim] = 8.0
        fat[rim], water[rim] = 85.0, 12.0
        water[hole], fat[hole] = 0.0, 0.0
    water += rng.uniform(0, 3, shape).astype(np.float32)
    fat += rng.uniform(0, 3, shape).astype(np.float32)
    px = (0.8, 0.8)
    affine = np.diag([*px, 5.0, 1.0])
    got = outer_ring_ff_pct(Volume(water, affine), Volume(fat, affine), (0.5, 4.0))
    assert got == _whole_slice_ring_ff(water, fat, px, (0.5, 4.0))
    assert got > 70.0  # the rim, not the muscle
