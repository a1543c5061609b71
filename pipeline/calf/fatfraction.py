"""Proton-density fat fraction from Dixon magnitudes, with noise-bias handling, and its statistics in a muscle.

Naive: FF = F / (W + F). In magnitude images the smaller component carries a Rician noise floor (mean sigma*sqrt(pi/2)
for zero signal; Gudbjartsson & Patz, Magn Reson Med 1995;34:910-914), so a pure-water muscle at low SNR shows a
positive FF bias.

Magnitude discrimination (Liu et al., Magn Reson Med 2007;58:354-364): compute FF from the dominant component and
the in-phase magnitude IP = |W + F| (high SNR), never from the small noisy one:

    water-dominant (W >= F):  FF = 1 - W / IP
    fat-dominant   (F >  W):  FF = F / IP

Voxel values are not clipped to [0, 1] before averaging, so noise averages out instead of accumulating a bias.
"""

from __future__ import annotations

import numpy as np

from pipeline.calf.metrics import find_boxes


def ff_naive(water: np.ndarray, fat: np.ndarray) -> np.ndarray:
    """F / (W + F) per voxel (fraction, 0-1).

    >>> float(ff_naive(np.array([90.0]), np.array([10.0]))[0])
    0.1
    """
    w, f = np.asarray(water, np.float64), np.asarray(fat, np.float64)
    return f / np.maximum(w + f, 1e-9)


def ff_magnitude_discrimination(water: np.ndarray, fat: np.ndarray, inphase: np.ndarray) -> np.ndarray:
    """Fat fraction by magnitude discrimination with IP = |W + F| (Liu et al. 2007); fraction, not clipped.

    >>> round(float(ff_magnitude_discrimination(np.array([90.0]), np.array([12.0]), np.array([100.0]))[0]), 12)
    0.1
    >>> float(ff_magnitude_discrimination(np.array([20.0]), np.array([80.0]), np.array([100.0]))[0])
    0.8
    """
    w, f, ip = (np.asarray(a, np.float64) for a in (water, fat, inphase))
    ip = np.maximum(ip, 1e-9)
    return np.where(w >= f, 1.0 - w / ip, f / ip)


def erode_along(mask: np.ndarray, axis: int, radius: int) -> np.ndarray:
    """Binary erosion of ``mask`` along one array axis by a line of ``2 * radius + 1`` voxels centred on each voxel,
    voxels beyond the array edge counting as background: a voxel stays set when all voxels of its line are set.

    >>> erode_along(np.array([1, 1, 1, 1, 0, 1], bool), 0, 1).astype(int).tolist()
    [0, 1, 1, 0, 0, 0]
    """
    mask = np.asarray(mask, bool)
    n = mask.shape[axis]
    out = np.zeros_like(mask)
    width = 2 * radius + 1
    if n < width:
        return out

    def part(start: int, stop: int) -> tuple[slice, ...]:
        index = [slice(None)] * mask.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    acc = mask[part(0, n - width + 1)].copy(order="K")
    for d in range(1, width):
        np.logical_and(acc, mask[part(d, n - width + 1 + d)], out=acc)
    out[part(radius, n - radius)] = acc
    return out


def erode_in_plane(mask: np.ndarray, axis: int, erode_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Erode ``mask`` within each slice by ``erode_mm`` (rounded to whole pixels, at least one when > 0).

    The structuring element is a rectangle of (2 r_0 + 1) x (2 r_1 + 1) pixels in the plane of the slice, voxels
    beyond the array edge count as background (``scipy.ndimage.binary_erosion`` with that element and
    ``border_value=0``); a rectangle is the product of two lines, so the erosion runs as two line erosions
    (:func:`erode_along`).
    """
    if erode_mm <= 0:
        return mask
    r = [max(1, int(round(erode_mm / p))) for p in pixel_mm]
    in_plane = [a for a in range(3) if a != axis]
    return erode_along(erode_along(mask, in_plane[0], r[0]), in_plane[1], r[1])


def roi_ff(water: np.ndarray, fat: np.ndarray, inphase: np.ndarray | None) -> float:
    """Fat fraction of a region from its summed signals (ratio of sums, not mean of ratios, so that the ratio's own
    noise bias vanishes at low SNR): with the in-phase sum, magnitude discrimination on the sums
    (1 - sum W / sum IP when water dominates, sum F / sum IP otherwise); without it, sum F / (sum W + sum F).

    >>> round(roi_ff(np.array([90.0, 90.0]), np.array([10.0, 10.0]), np.array([100.0, 100.0])), 12)
    0.1
    """
    w, f = float(np.sum(water)), float(np.sum(fat))
    if inphase is None:
        return f / max(w + f, 1e-9)
    ip = max(float(np.sum(inphase)), 1e-9)
    return 1.0 - w / ip if w >= f else f / ip


def ff_statistics_pct(ff: np.ndarray, mask: np.ndarray, roi_fraction: float | None = None) -> dict[str, float | None]:
    """Mean, median, 10th and 90th percentile of the fat fraction (percent) inside ``mask``; the mean is
    ``roi_fraction`` (see :func:`roi_ff`) when given, else the mean of the voxel values.

    >>> ff_statistics_pct(np.array([0.1, 0.2, 0.3]), np.array([True, True, True]))["mean"]
    20.0
    """
    vals = 100.0 * np.asarray(ff)[mask]
    if vals.size == 0:
        return {"mean": None, "median": None, "p10": None, "p90": None}
    mean = 100.0 * roi_fraction if roi_fraction is not None else float(vals.mean())
    return {"mean": round(mean, 3), "median": round(float(np.median(vals)), 3),
            "p10": round(float(np.percentile(vals, 10)), 3), "p90": round(float(np.percentile(vals, 90)), 3)}


def structure_ff_rows(labels: np.ndarray, ff_pct: np.ndarray, names: dict[int, tuple[str, str]], slice_axis: int,
                      pixel_mm: tuple[float, float], erode_mm: float) -> list[dict[str, object]]:
    """Fat fraction of each labelled structure from a voxel FF map (percent): the mean and median over the whole
    structure and the median over its core (eroded in-plane by ``erode_mm``, see :func:`erode_in_plane`; the whole
    structure when erosion leaves nothing). ``names`` maps label id -> (side, structure). Rows are tidy
    (side, structure, metric, value, unit); a structure absent from ``labels`` gives no rows.

    >>> lab = np.zeros((7, 7, 1), int); lab[1:6, 1:6, 0] = 1
    >>> ff = np.where(lab == 1, 4.0, 0.0); ff[1, 1, 0] = 60.0
    >>> rows = structure_ff_rows(lab, ff, {1: ("left", "soleus")}, 2, (1.0, 1.0), 1.0)
    >>> [(r["metric"], r["value"]) for r in rows]
    [('ff_map_mean_pct', 6.24), ('ff_map_median_pct', 4.0), ('ff_map_core_median_pct', 4.0)]
    """
    rows: list[dict[str, object]] = []
    labels = np.asarray(labels)
    boxes = find_boxes(labels if labels.dtype.kind in "iu" else labels.astype(np.int64))
    for lid, (side, name) in names.items():
        if lid > len(boxes) or boxes[lid - 1] is None:
            continue
        box = boxes[lid - 1]
        mask = labels[box] == lid
        vals = np.asarray(np.asarray(ff_pct)[box], np.float64)
        core = erode_in_plane(mask, slice_axis, erode_mm, pixel_mm)
        core = core if core.any() else mask
        for metric, value in (("ff_map_mean_pct", float(np.mean(vals[mask]))),
                              ("ff_map_median_pct", float(np.median(vals[mask]))),
                              ("ff_map_core_median_pct", float(np.median(vals[core])))):
            rows.append({"side": side, "structure": name, "metric": metric, "value": round(value, 3), "unit": "%"})
    return rows
