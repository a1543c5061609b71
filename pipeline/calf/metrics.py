"""Size metrics of a muscle mask on an image grid: volume, cross-sectional area per slice, coverage.

All geometry comes from the affine. The area of one in-plane pixel is ``|c_i x c_j|`` (c = affine columns of the two
in-plane axes); when the slices are oblique to the leg, the cross-section perpendicular to the leg axis ``l`` is the
slice area times ``|n . l|`` (n = unit slice normal), as for any planar section of a prism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.core.volume import Volume


def slice_axis(volume: Volume) -> int:
    """The array axis along which the axial slices are stacked: the one closest to world z."""
    dirs = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(dirs[2])))


def volume_ml(mask: np.ndarray, voxel_volume_mm3: float) -> float:
    """Volume (ml) = voxel count x voxel volume (mm3) / 1000.

    >>> volume_ml(np.ones((10, 10, 10), bool), 1.0)
    1.0
    """
    return float(np.count_nonzero(mask)) * voxel_volume_mm3 / 1000.0


def pixel_area_mm2(affine: np.ndarray, axis: int) -> float:
    """Area (mm2) of one pixel of a slice across ``axis``: |c_i x c_j| for the two in-plane columns.

    >>> pixel_area_mm2(np.diag([0.5, 2.0, 5.0, 1.0]), 2)
    1.0
    """
    i, j = [a for a in range(3) if a != axis]
    return float(np.linalg.norm(np.cross(affine[:3, i], affine[:3, j])))


def obliquity_factor(affine: np.ndarray, axis: int, leg_axis: np.ndarray) -> float:
    """|n . l|: converts a slice-plane area into the cross-section perpendicular to the leg axis ``l``.

    >>> round(obliquity_factor(np.eye(4), 2, np.array([0.0, np.sin(0.2), np.cos(0.2)])), 4)
    0.9801
    """
    i, j = [a for a in range(3) if a != axis]
    n = np.cross(affine[:3, i], affine[:3, j])
    n /= np.linalg.norm(n)
    return float(abs(n @ (leg_axis / np.linalg.norm(leg_axis))))


def leg_axis_from_mask(volume: Volume, mask: np.ndarray, axis: int, origin: tuple[int, int, int] = (0, 0, 0),
                       min_voxels: int = 5) -> np.ndarray:
    """Unit direction of a leg's long axis: the principal direction (first right singular vector of the centred
    points) of the per-slice centroids c_k = (1 / n_k) sum_{v in mask, slice k} v (world mm) of ``mask`` (e.g. the
    tibia) over the slices holding at least ``min_voxels`` voxels; world z when fewer than three slices qualify.

    ``mask`` may be a box cut out of the volume's grid whose first voxel is ``origin`` (voxel indices). The centroids
    come from integer coordinate sums (exact) in one pass over the mask's voxels.

    >>> m = np.zeros((9, 9, 4), bool)
    >>> for k in range(4): m[2 + k:4 + k, 3:6, k] = True
    >>> np.round(leg_axis_from_mask(Volume(m, np.eye(4)), m, 2), 4).tolist()
    [0.7071, 0.0, 0.7071]
    """
    coords = [c.astype(np.int64) + int(o) for c, o in zip(np.nonzero(mask), origin)]
    k_of = coords[axis] - int(origin[axis])
    n_slices = mask.shape[axis]
    counts = np.bincount(k_of, minlength=n_slices)
    sums = [np.bincount(k_of, weights=c, minlength=n_slices) for c in coords]  # exact: integer sums < 2**53
    cents = []
    for k in np.nonzero(counts >= min_voxels)[0]:
        idx = np.array([sums[a][k] / counts[k] for a in range(3)])
        idx[axis] = k + int(origin[axis])
        cents.append(volume.voxel_to_world(idx[None])[0])
    if len(cents) < 3:
        return np.array([0.0, 0.0, 1.0])
    c = np.array(cents)
    _, _, vt = np.linalg.svd(c - c.mean(axis=0))
    d = vt[0]
    return d if d[2] >= 0 else -d


def csa_per_slice_mm2(mask: np.ndarray, affine: np.ndarray, axis: int, factor: float = 1.0) -> np.ndarray:
    """Cross-sectional area (mm2) of ``mask`` on every slice: pixel count x pixel area x obliquity factor."""
    other = tuple(a for a in range(3) if a != axis)
    return np.count_nonzero(mask, axis=other) * pixel_area_mm2(affine, axis) * factor


def slice_positions_mm(volume: Volume, axis: int) -> np.ndarray:
    """World z (mm) of the centre of every slice."""
    centre = (np.array(volume.shape, float) - 1) / 2
    idx = np.repeat(centre[None], volume.shape[axis], axis=0)
    idx[:, axis] = np.arange(volume.shape[axis])
    return volume.voxel_to_world(idx)[:, 2]


@dataclass(frozen=True)
class Coverage:
    """Slices a structure occupies; ``partial`` when it touches the first or last slice of the measured span of its
    leg (``span``: by default the whole stack), so that its volume is only the part inside the field of view: the
    ends of the stack, and slices left out of the calf (:mod:`pipeline.calf.extent`) at the ends of the leg."""

    first: int | None
    last: int | None
    n_slices: int
    span: tuple[int, int] | None = None

    @property
    def partial(self) -> bool:
        lo, hi = self.span if self.span is not None else (0, self.n_slices - 1)
        return self.first is not None and (self.first <= lo or self.last >= hi)


def coverage(csa: np.ndarray, span: tuple[int, int] | None = None) -> Coverage:
    """Coverage from a CSA profile, within the measured ``span`` (first and last slice; default the whole stack).

    >>> coverage(np.array([0, 5.0, 3.0, 0])).partial, coverage(np.array([2.0, 1.0])).partial
    (False, True)
    >>> coverage(np.array([0, 5.0, 3.0, 0]), span=(1, 3)).partial
    True
    """
    nz = np.nonzero(csa > 0)[0]
    if nz.size == 0:
        return Coverage(None, None, len(csa), span)
    return Coverage(int(nz[0]), int(nz[-1]), len(csa), span)


def find_boxes(arr: np.ndarray) -> list[tuple[slice, ...] | None]:
    """``scipy.ndimage.find_objects`` of an integer label array: the bounding box of every label id > 0 (None for an
    absent id). A Fortran-ordered array (as NIfTI data are) is scanned through its C-ordered transpose, whose boxes
    are the same slices in reverse order, in half the time.

    >>> a = np.asfortranarray(np.array([[[0, 2], [0, 2]]]))
    >>> find_boxes(a) == find_boxes(np.ascontiguousarray(a)) == [None, (slice(0, 1), slice(0, 2), slice(1, 2))]
    True
    """
    a = np.asarray(arr)
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        return [None if box is None else box[::-1] for box in ndimage.find_objects(a.T)]
    return list(ndimage.find_objects(a))
