"""Two-point Dixon water/fat separation from in-phase and opposed-phase magnitudes.

With water signal W and fat signal F (real, >= 0) the in-phase magnitude is IP = W + F and the opposed-phase
magnitude OP = |W - F| (Dixon, Radiology 1984;153:189-194; Ma, J Magn Reson Imaging 2008;28:543-558). Assuming water
dominance (W >= F, true of muscle unless fat fraction exceeds 50 %):

    W = (IP + OP) / 2,    F = (IP - OP) / 2.

Magnitude data cannot tell which species dominates: in fat-dominant voxels (subcutaneous fat, marrow, muscle with
FF > 50 %) the two outputs are swapped. Use this only when the scanner exported no separated water and fat images,
and say so in provenance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume


def two_point_dixon(inphase: Volume, outphase: Volume) -> tuple[Volume, Volume]:
    """(water, fat) magnitudes from in-phase and opposed-phase magnitudes, assuming water dominance.

    >>> ip = Volume(np.full((1, 1, 1), 100.0), np.eye(4)); op = ip.with_array(np.full((1, 1, 1), 80.0))
    >>> [float(v.array[0, 0, 0]) for v in two_point_dixon(ip, op)]
    [90.0, 10.0]
    """
    if not inphase.same_grid(outphase):
        raise BadInputError("in-phase and opposed-phase images are not on the same grid.", path=None,
                            fix="use the in-phase and opposed-phase series of one Dixon acquisition.")
    ip = np.asarray(inphase.array, np.float32)
    op = np.asarray(outphase.array, np.float32)
    water = (ip + op) / 2
    fat = np.clip((ip - op) / 2, 0, None)
    note = "water/fat derived from in-phase and opposed-phase by 2-point Dixon (water-dominance assumed)"
    return inphase.with_array(water, derived=note), inphase.with_array(fat, derived=note)


def outer_ring_ff_pct(water: Volume, fat: Volume, depth_mm: tuple[float, float]) -> float | None:
    """Median fat fraction F / (W + F), in percent, of the tissue between ``depth_mm[0]`` and ``depth_mm[1]`` inside
    the body outline on every axial slice: the skin and subcutaneous fat, which are fat in every adult (about 80-90 %
    at this depth on Dixon images). None when no slice shows a body.

    The outline is Otsu's threshold of W + F (Otsu, IEEE Trans Syst Man Cybern 1979;9:62-66), opened and hole-filled
    per slice; the depth is the in-plane Euclidean distance to the outline. Slices are the last array axis
    (ingested volumes are RAS+ with axial slices last). The work is done inside the in-plane box of the body over all
    slices with a margin of background, which gives the whole slice's opening, filling and distances exactly.
    """
    from skimage.filters import threshold_otsu

    w = np.asarray(water.array, np.float32)
    f = np.asarray(fat.array, np.float32)
    total = w + f
    if not np.any(total > 0):
        return None
    body = total > threshold_otsu(total[::2, ::2, ::2])
    box = _in_plane_box(body, margin=2)
    body, f, total = body[box], f[box], total[box]
    px = (water.spacing_mm[0], water.spacing_mm[1])
    values = []
    for k in range(body.shape[2]):
        b = ndimage.binary_fill_holes(ndimage.binary_opening(body[:, :, k]))
        if np.count_nonzero(b) < 100:
            continue
        depth = ndimage.distance_transform_edt(b, sampling=px)
        ring = (depth > depth_mm[0]) & (depth <= depth_mm[1])
        values.append(f[:, :, k][ring] / np.maximum(total[:, :, k][ring], 1e-6))
    if not values or not sum(v.size for v in values):
        return None
    return 100.0 * float(np.median(np.concatenate(values)))


def _in_plane_box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """Rows and columns of ``mask`` (X, Y, slices) that hold any True voxel on any slice, widened by ``margin``
    background voxels on each side (clipped at the array's edge, where the whole slice ends too); every slice.

    >>> m = np.zeros((6, 5, 2), bool); m[2:4, 1, 1] = True
    >>> _in_plane_box(m, 1)
    (slice(1, 5, None), slice(0, 3, None), slice(None, None, None))
    """
    rows, cols = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    if not rows.size:
        return (slice(None), slice(None), slice(None))
    return (slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + margin + 1),
            slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + margin + 1), slice(None))


def water_fat_identity(water: Volume, fat: Volume, cfg: dict) -> tuple[str, float | None]:
    """Whether scanner images labelled water and fat are what their labels say, from the signal: ``"as labelled"``,
    ``"swapped"`` (the subcutaneous ring reads below ``cfg['swapped_below_pct']`` % fat: the labels are the wrong
    way round) or ``"uncertain"`` (between that and ``cfg['trusted_above_pct']``), with the ring's median FF
    (:func:`outer_ring_ff_pct`); ``"as labelled"`` with None when there is no body to judge."""
    ring = outer_ring_ff_pct(water, fat, tuple(cfg["ring_depth_mm"]))
    if ring is None or ring >= cfg["trusted_above_pct"]:
        return "as labelled", ring
    return ("swapped" if ring < cfg["swapped_below_pct"] else "uncertain"), ring
