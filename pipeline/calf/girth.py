"""Calf girth: the length of a tape measure laid around a leg, on every slice.

Each leg's body mask (all of its labels) is opened in-plane by a disc of ``opening_mm`` (:func:`open_in_plane`: what
a segmentation that frays into the background noise at the skin adds outside the leg, scattered voxels and strands
narrower than the disc, is removed; a leg's outline, curved over tens of millimetres, is not changed), its holes are
filled per slice, it is smoothed with a Gaussian of ``smoothing_px`` pixels and its outline traced at the 0.5 level
with sub-pixel precision (marching squares, ``skimage.measure.find_contours``). A tape held around the calf lies on
the convex hull of its cross-section: it bridges the hollows between the muscle bellies and does not follow a ragged
outline. Girth = the perimeter of the convex hull of the largest outline (``scipy.spatial.ConvexHull``, Qhull), its
vertices mapped to millimetres through the in-plane affine columns, so anisotropic and rotated pixels are measured
correctly (an affine map carries a convex hull to the convex hull of the mapped points).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage import measure


def polygon_perimeter_mm(points_ij: np.ndarray, affine: np.ndarray, axes: tuple[int, int]) -> float:
    """Length (mm) of the closed polygon ``points_ij`` (pixel coordinates along ``axes``).

    >>> sq = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)
    >>> polygon_perimeter_mm(sq, np.diag([0.5, 2.0, 1.0, 1.0]), (0, 1))
    50.0
    """
    m = affine[:3, list(axes)]
    d = np.diff(np.vstack([points_ij, points_ij[:1]]), axis=0)
    return float(np.linalg.norm(d @ m.T, axis=1).sum())


def tape_perimeter_mm(points_ij: np.ndarray, affine: np.ndarray, axes: tuple[int, int]) -> float:
    """Length (mm) of a tape laid around the outline ``points_ij`` (pixel coordinates along ``axes``): the perimeter
    of its convex hull (:func:`polygon_perimeter_mm` of the hull's vertices, which Qhull returns in order around it).

    >>> notch = np.array([[0, 0], [0, 10], [5, 8], [10, 10], [10, 0]], float)  # a square with a hollow in one side
    >>> round(polygon_perimeter_mm(notch, np.eye(4), (0, 1)), 2), tape_perimeter_mm(notch, np.eye(4), (0, 1))
    (40.77, 40.0)
    """
    hull = ConvexHull(points_ij)
    return polygon_perimeter_mm(points_ij[hull.vertices], affine, axes)


def fill_holes_in_plane(mask: np.ndarray, axis: int) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of every slice of ``mask`` across ``axis``: background pixels that no
    4-connected path of background pixels joins to the edge of their slice are set. One labelling of the background
    of all slices (connected within each slice only) instead of one fill per slice.

    >>> ring = np.ones((3, 3, 1), bool); ring[1, 1, 0] = False
    >>> ring = np.pad(ring, ((1, 1), (1, 1), (0, 0)))
    >>> int(fill_holes_in_plane(ring, 2).sum()), int(ring.sum())
    (9, 8)
    """
    mask = np.asarray(mask, bool)
    cross = np.expand_dims(ndimage.generate_binary_structure(2, 1), axis)
    cross = np.pad(cross, [(1, 1) if a == axis else (0, 0) for a in range(3)])
    background, n = ndimage.label(~mask, structure=cross)
    outside = np.zeros(n + 1, bool)
    for a in range(3):
        if a != axis:
            outside[np.take(background, 0, axis=a)] = True
            outside[np.take(background, -1, axis=a)] = True
    outside[0] = False
    return ~outside[background]


def open_in_plane(mask: np.ndarray, affine: np.ndarray, axis: int, radius_mm: float) -> np.ndarray:
    """Binary opening of every slice of ``mask`` across ``axis`` by a disc of ``radius_mm`` (an ellipse in pixels
    when the in-plane spacings differ, from the affine's column lengths): a flat structuring element, so no slice
    touches its neighbours. ``radius_mm`` 0 returns ``mask``.

    >>> m = np.zeros((12, 12, 1), bool); m[2:10, 2:10] = True; m[0, 5] = True  # a square and a stray voxel
    >>> int(open_in_plane(m, np.eye(4), 2, 1.0).sum()), int(m.sum())  # the voxel goes, and the square's corners
    (60, 65)
    """
    if radius_mm <= 0:
        return np.asarray(mask, bool)
    axes = [a for a in range(3) if a != axis]
    r = [radius_mm / float(np.linalg.norm(affine[:3, a])) for a in axes]
    n = [int(np.floor(v)) for v in r]
    grid = np.ogrid[-n[0]:n[0] + 1, -n[1]:n[1] + 1]
    disc = (grid[0] / r[0]) ** 2 + (grid[1] / r[1]) ** 2 <= 1.0
    return ndimage.binary_opening(mask, structure=np.expand_dims(disc, axis))


def girth_per_slice_mm(leg_mask: np.ndarray, affine: np.ndarray, axis: int, smoothing_px: float = 1.0,
                       opening_mm: float = 0.0) -> np.ndarray:
    """Tape girth (mm, :func:`tape_perimeter_mm`) of the largest outline on each slice; NaN where the leg is absent.

    The mask is opened (:func:`open_in_plane`; before the holes are filled, which would close the gaps between
    stray voxels at the skin into solid fringe), its holes filled (:func:`fill_holes_in_plane`) and the Gaussian
    applied in-plane (sigma 0 across ``axis``) to all slices at once; all act within each slice only."""
    axes = tuple(a for a in range(3) if a != axis)
    out = np.full(leg_mask.shape[axis], np.nan)
    filled = fill_holes_in_plane(open_in_plane(leg_mask, affine, axis, opening_mm), axis)
    counts = np.count_nonzero(filled, axis=axes)
    smooth = filled.astype(float)
    if smoothing_px > 0:
        smooth = ndimage.gaussian_filter(smooth, [0.0 if a == axis else smoothing_px for a in range(3)])
    for k in range(leg_mask.shape[axis]):
        if counts[k] < 10:
            continue
        contours = measure.find_contours(np.pad(np.take(smooth, k, axis=axis), 2), 0.5)
        if not contours:
            continue
        best = max(contours, key=len) - 2
        out[k] = tape_perimeter_mm(best, affine, axes)  # type: ignore[arg-type]
    return out


def running_median(values: np.ndarray, window: int = 3) -> np.ndarray:
    """Median over ``window`` neighbouring slices (NaN slices ignored; NaN where the slice itself is NaN): the
    reference against which a single slice's outline artefact (a noise blob, a coil hot spot) stands out.

    >>> running_median(np.array([30.0, 31.0, 45.0, 32.0, np.nan]))
    array([30.5, 31. , 32. , 38.5,  nan])
    """
    out = np.full(values.shape, np.nan)
    h = window // 2
    for k in np.flatnonzero(~np.isnan(values)):
        out[k] = np.nanmedian(values[max(0, k - h):k + h + 1])
    return out


def muscle_bearing(muscle_csa_mm2: np.ndarray, min_fraction: float, edge_slices: int) -> np.ndarray:
    """Slices of a leg that carry the calf muscles: muscle cross-section at least ``min_fraction`` of the leg's
    largest, not among the ``edge_slices`` first or last slices of the field of view (where 3-D slab profiles,
    coil edges and wrap-around distort the outline), and in the one unbroken run of such slices that holds the most
    muscle (the largest sum of cross-sections: the calf). Above the knee joint and near the ankle the muscle area
    falls off, so the knee's wide bony outline never becomes the calf girth; a few slices apart from the calf that
    show muscle-like area again (a 3-D slab that wraps the knee into its last slices, the gastrocnemius heads at
    the femoral condyles beyond the tibial plateau) are left out by the run.

    >>> muscle_bearing(np.array([0, 500, 1000, 2000, 1900, 800.0]), 0.5, 1).tolist()
    [False, False, True, True, True, False]
    >>> muscle_bearing(np.array([0, 2500, 1200, 300, 1000, 2000, 1900, 800.0]), 0.5, 1).tolist()
    [False, False, False, False, False, True, True, False]
    """
    ok = muscle_csa_mm2 >= min_fraction * np.nanmax(muscle_csa_mm2) if np.any(muscle_csa_mm2 > 0) else \
        np.zeros(muscle_csa_mm2.shape, bool)
    if edge_slices > 0:
        ok[:edge_slices] = False
        ok[len(ok) - edge_slices:] = False
    if not ok.any():
        return ok
    runs, n = ndimage.label(ok)
    muscle = ndimage.sum_labels(np.nan_to_num(muscle_csa_mm2), runs, index=np.arange(1, n + 1))
    return runs == 1 + int(np.argmax(muscle))


def max_girth_slice(girth_mm: np.ndarray, muscle_csa_mm2: np.ndarray, min_muscle_fraction: float = 0.5,
                    edge_slices: int = 1, outlier_fraction: float = 0.03, window: int = 3) -> int | None:
    """Index of the slice of maximum calf girth among the muscle-bearing slices (:func:`muscle_bearing`), leaving
    out a slice whose girth exceeds the running median of its neighbourhood (:func:`running_median`) by more than
    ``outlier_fraction`` (a noise blob, coil hot spot or wrap-around on one slice); None when no slice qualifies.

    >>> max_girth_slice(np.array([470, 380, 420, 440, 430, 300.0]), np.array([300, 1800, 2000, 1900, 1500, 900.0]))
    3
    >>> max_girth_slice(np.array([300, 400, 500, 410, 405, 300.0]), np.full(6, 2000.0))
    3
    """
    ok = girth_slices_ok(girth_mm, muscle_csa_mm2, min_muscle_fraction, edge_slices, outlier_fraction, window)
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(girth_mm[ok])])


def girth_slices_ok(girth_mm: np.ndarray, muscle_csa_mm2: np.ndarray, min_muscle_fraction: float = 0.5,
                    edge_slices: int = 1, outlier_fraction: float = 0.03, window: int = 3) -> np.ndarray:
    """The slices where one leg's girth may be read (see :func:`max_girth_slice`): muscle-bearing, an outline
    traced, and not an outlier against the running median of its neighbourhood.

    >>> girth_slices_ok(np.array([300, 400, 500, 410, 405, 300.0]), np.full(6, 2000.0)).tolist()
    [False, True, False, True, True, False]
    """
    smooth = running_median(girth_mm, window)
    with np.errstate(invalid="ignore"):
        return muscle_bearing(muscle_csa_mm2, min_muscle_fraction, edge_slices) & ~np.isnan(girth_mm) \
            & (girth_mm <= smooth * (1.0 + outlier_fraction))


def matched_girth_slice(girths: list[np.ndarray], muscle_csas: list[np.ndarray], min_muscle_fraction: float = 0.5,
                        edge_slices: int = 1, outlier_fraction: float = 0.03, window: int = 3) -> int | None:
    """The one level at which both legs' girths are compared: the slice of largest summed girth among those where
    every leg's girth may be read (:func:`girth_slices_ok` for each leg on its own, so an artefact on one leg's slice
    is never compared with the other leg); None when no slice qualifies for all.

    >>> g_r, g_l = np.array([400, 410, 514, 411, 300.0]), np.array([398, 407, 406, 577, 72.0])
    >>> matched_girth_slice([g_r, g_l], [np.full(5, 2000.0)] * 2)
    1
    """
    ok = np.logical_and.reduce([girth_slices_ok(g, c, min_muscle_fraction, edge_slices, outlier_fraction, window)
                                for g, c in zip(girths, muscle_csas)])
    if not ok.any():
        return None
    total = np.sum(girths, axis=0)
    return int(np.flatnonzero(ok)[np.argmax(total[ok])])


def shaft_level_muscle_csa(muscle_csa_mm2: np.ndarray, bone_csa_mm2: np.ndarray, leg_csa_mm2: np.ndarray,
                           max_bone_fraction: float) -> np.ndarray:
    """Muscle cross-section per slice, zero where bone takes more than ``max_bone_fraction`` of the leg's
    cross-section: the tibial plateau and the knee (and the ankle's malleoli), where the calf girth is not measured.
    Along the shafts tibia and fibula hold about 5 % of the calf's cross-section, at the tibial plateau 25 % or more.

    >>> shaft_level_muscle_csa(np.array([500, 6000, 5000.0]), np.array([3000, 500, 450.0]), np.array([9000, 9500, 8200.0]), 0.2)
    array([   0., 6000., 5000.])
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(leg_csa_mm2 > 0, bone_csa_mm2 / leg_csa_mm2, 0.0)
    return np.where(frac <= max_bone_fraction, muscle_csa_mm2, 0.0)
