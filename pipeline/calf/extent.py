"""The calf's extent along the leg: slices at the distal end of the field of view that hold another region's anatomy.

A 3-D slab whose partition direction is not oversampled enough folds the anatomy beyond one end of the slab into the
slices at the other end (wrap-around, aliasing along the slice direction; Zhuo J, Gullapalli RP, RadioGraphics
2006;26:275-297). On a knee-to-ankle calf slab the knee folds onto the ankle slices, and a network labels the knee's
muscle there as calf muscle. Along a real calf the muscle tapers from mid-calf to the ankle, where the gastrocnemius
has long ended in the Achilles tendon (Standring S (ed.), Gray's Anatomy, 42nd ed., 2020, leg chapter): muscle
whose gastrocnemius comes back distal to that end is not this calf, and measuring it adds another level's muscle to
the calf's volumes.

The ends of a slab are also dim: a 3-D slab's excitation profile falls off at its edges and a coil's sensitivity at
its ends, so the first and last slices carry a fraction of the signal of the rest. The segmentation of such slices is
guessed from noise and partial volume (on the real calf study: knee-joint slices at a third of the study's signal
labelled as calf muscle); runs of slices at either end whose tissue signal is under a fraction of the study's median
slice are left out too (:func:`dim_end_slices`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.calf.girth import muscle_bearing
from pipeline.calf.metrics import slice_axis, slice_positions_mm
from pipeline.core.labels import Registry
from pipeline.core.volume import Volume

GASTROCNEMIUS = ("gastrocnemius_medial", "gastrocnemius_lateral")


def distal_fold(muscle_mm2: np.ndarray, gastrocnemius_mm2: np.ndarray, muscle_fraction: float,
                gap_fraction: float, return_fraction: float) -> int:
    """How many slices at the distal end of one leg hold anatomy that is not its calf; the slices are ordered
    from distal (index 0) to proximal.

    With m and g the muscle and gastrocnemius cross-sections as fractions of their largest, the calf's run is the
    muscle-bearing run of :func:`pipeline.calf.girth.muscle_bearing` (m >= ``muscle_fraction``). Slices distal to it
    where m reaches ``muscle_fraction`` again are folded-in anatomy when the gastrocnemius, distal to the slice where
    it falls under ``gap_fraction`` (it had ended there), reaches ``return_fraction`` again: those slices and every
    slice up to that gap are counted. 0 when there is no such run.

    >>> m = np.array([0.1, 0.6, 0.7, 0.3, 0.2, 0.2, 0.5, 0.8, 1.0, 0.9])
    >>> g = np.array([0.0, 0.5, 0.2, 0.2, 0.0, 0.0, 0.1, 0.6, 1.0, 0.8])
    >>> distal_fold(m, g, 0.5, 0.1, 0.3)
    4
    >>> distal_fold(m, np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.6, 1.0, 0.8]), 0.5, 0.1, 0.3)
    0
    """
    if not (np.nanmax(muscle_mm2, initial=0.0) > 0 and np.nanmax(gastrocnemius_mm2, initial=0.0) > 0):
        return 0
    m = np.nan_to_num(muscle_mm2) / np.nanmax(muscle_mm2)
    g = np.nan_to_num(gastrocnemius_mm2) / np.nanmax(gastrocnemius_mm2)
    calf = np.flatnonzero(muscle_bearing(m, muscle_fraction, 0))
    if calf.size == 0:
        return 0
    again = np.flatnonzero(m[:calf[0]] >= muscle_fraction)
    if again.size == 0:
        return 0
    ended = np.flatnonzero(g[again[-1]:calf[0]] < gap_fraction)
    if ended.size == 0:
        return 0
    gap = int(again[-1] + ended[0])
    return gap if float(g[:gap].max()) >= return_fraction else 0


WRAP_AROUND = ("muscle and gastrocnemius come back there after the gastrocnemius had ended, anatomy folded in from "
               "beyond the field of view (wrap-around)")


@dataclass(frozen=True)
class Fold:
    """The slices of one leg left out of the calf: their indices along the slice axis, world z (mm), the end of the
    stack they lie at and why (default: folded-in anatomy, :func:`drop_distal_fold`)."""

    side: str
    slices: tuple[int, ...]
    z_mm: tuple[float, float]
    end: str = "distal"
    why: str = WRAP_AROUND

    def describe(self) -> str:
        return (f"{self.side} leg: {len(self.slices)} slices at the {self.end} end (z {self.z_mm[0]:.0f} to "
                f"{self.z_mm[1]:.0f} mm) left out: {self.why}")


def drop_distal_fold(labels: Volume, reg: Registry, muscle_fraction: float, gap_fraction: float,
                     return_fraction: float) -> tuple[Volume, list[Fold]]:
    """The sided calf label map with the folded-in distal slices (:func:`distal_fold`) of its legs set to
    background, and what was left out. Wrap-around is a property of the slab, not of a leg, so the most slices
    found in any leg are left out of every leg: a fold labelled differently in the two legs does not become a
    left/right difference. Distal is the low world z end (RAS+: z runs to the head)."""
    arr = np.asarray(labels.array)
    axis = slice_axis(labels)
    z = slice_positions_mm(labels, axis)
    order = np.argsort(z)
    # one pass over the volume: voxel counts per slice and label id
    per_slice = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
    n_ids = int(arr.max(initial=0)) + 1
    counts = np.stack([np.bincount(s, minlength=n_ids) for s in per_slice.astype(np.int64)])
    sides = sorted({info.side for info in reg.labels if info.side})
    ids = {side: {name: reg.sided_id(name, side) for name in reg.classes[1:]} for side in sides}
    found = {side: distal_fold(_area(counts, [ids[side][n] for n in reg.muscles])[order],
                               _area(counts, [ids[side][n] for n in GASTROCNEMIUS])[order],
                               muscle_fraction, gap_fraction, return_fraction) for side in sides}
    n = max(found.values(), default=0)
    if n == 0:
        return labels, []
    dropped = np.sort(order[:n])
    out = arr.copy()
    view = np.moveaxis(out, axis, 0)
    folds = []
    for side in sides:
        side_ids = np.array(sorted(ids[side].values()))
        if not np.isin(view[dropped], side_ids).any():
            continue
        for k in dropped:
            view[k][np.isin(view[k], side_ids)] = 0
        folds.append(Fold(side, tuple(int(k) for k in dropped), (float(z[order[0]]), float(z[order[n - 1]]))))
    return labels.with_array(out), folds


def dim_end_slices(signal: np.ndarray, min_fraction: float) -> tuple[int, int]:
    """How many slices at the start and at the end of ``signal`` (one value per slice, in stack order; NaN where a
    slice holds no tissue) form runs under ``min_fraction`` of the median over the slices with tissue. Slices
    without tissue at the ends count into the runs; a stack whose every slice is dim, or has no tissue, gives (0, 0).

    >>> dim_end_slices(np.array([np.nan, 0.2, 0.3, 0.9, 1.0, 1.1, 1.0, 0.9, 0.3]), 0.5)
    (3, 1)
    >>> dim_end_slices(np.array([0.2, 0.3, 0.2]), 0.5)
    (0, 0)
    """
    values = np.asarray(signal, float)
    typical = float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0
    bright = np.flatnonzero(np.nan_to_num(values, nan=0.0) >= min_fraction * typical) if typical > 0 else []
    if len(bright) == 0:
        return 0, 0
    return int(bright[0]), int(len(values) - 1 - bright[-1])


def tissue_signal_per_slice(image: Volume, axis: int, body_fraction: float) -> np.ndarray:
    """Median signal of the tissue of each slice along ``axis``: voxels above ``body_fraction`` of the image's 99th
    percentile (background and air below it); NaN for a slice without such voxels."""
    arr = np.moveaxis(np.asarray(image.array, np.float32), axis, 0)
    threshold = body_fraction * float(np.percentile(arr, 99))
    out = np.full(arr.shape[0], np.nan)
    for k, sl in enumerate(arr):
        tissue = sl[sl > threshold]
        if tissue.size:
            out[k] = float(np.median(tissue))
    return out


def drop_dim_slab_ends(labels: Volume, image: Volume, reg: Registry, min_fraction: float, body_fraction: float,
                       already: list[Fold] | None = None) -> tuple[Volume, list[Fold]]:
    """The sided calf label map with the dim slices at either end of the stack (:func:`dim_end_slices` of
    :func:`tissue_signal_per_slice` of ``image``, the total signal the network saw, on the labels' grid) set to
    background in every leg, and what was left out beyond the slices of ``already`` (earlier :class:`Fold` records,
    so that no slice is reported twice)."""
    if not image.same_grid(labels):
        raise ValueError("the signal image is not on the calf labels' grid")
    axis = slice_axis(labels)
    z = slice_positions_mm(labels, axis)
    order = np.argsort(z)  # distal (low z) first
    low, high = dim_end_slices(tissue_signal_per_slice(image, axis, body_fraction)[order], min_fraction)
    ends = {"distal": order[:low], "proximal": order[len(order) - high:]}
    out = np.array(labels.array, copy=True)
    view = np.moveaxis(out, axis, 0)
    folds = []
    for side in sorted({info.side for info in reg.labels if info.side}):
        side_ids = np.array([reg.sided_id(name, side) for name in reg.classes[1:]])
        done = {k for f in (already or []) if f.side == side for k in f.slices}
        for end, ks in ends.items():
            ks = np.sort(np.array([k for k in ks if k not in done], int))
            hit = [k for k in ks if np.isin(view[k], side_ids).any()]
            if not hit:
                continue
            for k in hit:
                view[k][np.isin(view[k], side_ids)] = 0
            zs = sorted(float(z[k]) for k in ks)
            folds.append(Fold(side, tuple(int(k) for k in ks), (zs[0], zs[-1]), end,
                              f"the tissue signal there is under {min_fraction:g} of the study's median slice (the "
                              "edge of the 3-D slab or of the coil): too dim to segment"))
    return (labels.with_array(out) if folds else labels), folds


def _area(counts: np.ndarray, ids: list[int]) -> np.ndarray:
    """Voxels per slice of the label ``ids`` from per-slice counts (slices x label id); ids beyond the counts hold
    none."""
    cols = [i for i in ids if i < counts.shape[1]]
    return counts[:, cols].sum(axis=1).astype(float) if cols else np.zeros(counts.shape[0])


def without_folds(legs: list[tuple[str, np.ndarray]], folds: list[Fold], axis: int
                  ) -> list[tuple[str, np.ndarray]]:
    """Each leg's mask without its folded-in slices (:func:`drop_distal_fold`; ``axis`` the slice axis), so that what
    is judged of the segmentation is what is measured."""
    out = []
    for side, mask in legs:
        dropped = [k for f in folds if f.side == side for k in f.slices]
        if dropped:
            mask = mask.copy()
            np.moveaxis(mask, axis, 0)[dropped] = False
        out.append((side, mask))
    return out
