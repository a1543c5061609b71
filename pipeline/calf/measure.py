"""Per-muscle and per-group calf measurements for each side, and their left/right comparison.

Inputs: a sided calf label map (ids from configs/labels.yaml) and the Dixon images on the same grid (or none: a study
with one weighted image gets sizes, girth and asymmetry, and every fat-fraction value null with the reason). Outputs: tidy
measurement rows, per-slice rows and the calf section of ``summary.json`` (keys and units in
:mod:`pipeline.core.summary`'s contract). Groups: the ``groups`` of configs/labels.yaml (triceps_surae, anterior,
lateral, deep_posterior, superficial_posterior).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.calf.asymmetry import asymmetry_index_pct, difference, mercuri_like_grade
from pipeline.calf.fatfraction import (
    erode_in_plane,
    ff_magnitude_discrimination,
    ff_naive,
    ff_statistics_pct,
    roi_ff,
)
from pipeline.calf.girth import (
    girth_per_slice_mm,
    matched_girth_slice,
    max_girth_slice,
    shaft_level_muscle_csa,
)
from pipeline.calf.metrics import (
    coverage,
    find_boxes,
    leg_axis_from_mask,
    obliquity_factor,
    pixel_area_mm2,
    slice_axis,
    slice_positions_mm,
)
from pipeline.core.geometry import SIDES
from pipeline.core.labels import Registry
from pipeline.core.summary import Summary
from pipeline.core.units import ucum
from pipeline.core.volume import Volume

Box = tuple[slice, slice, slice]

AI_METRICS = {"volume_ml": "volume_ai_pct", "max_csa_mm2": "max_csa_ai_pct", "matched_csa_mm2": "matched_csa_ai_pct",
              "lean_volume_ml": "lean_volume_ai_pct"}


@dataclass
class CalfImages:
    """The images the fat fraction is read from; ``water`` and ``fat`` are None when the study has none, and then
    ``no_ff_reason`` says why."""

    water: Volume | None
    fat: Volume | None
    inphase: Volume | None = None
    ffmap: Volume | None = None
    no_ff_reason: str | None = None


@dataclass
class CalfMeasurements:
    rows: list[dict[str, Any]] = field(default_factory=list)  # measurements.csv: per side and structure
    legs: list[dict[str, Any]] = field(default_factory=list)  # legs.csv: per side, the leg outline (girth)
    asymmetry: list[dict[str, Any]] = field(default_factory=list)  # asymmetry.csv: right against left
    slices: list[dict[str, Any]] = field(default_factory=list)  # slices.csv
    summary: Summary = field(default_factory=Summary)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VoxelFF:
    """Voxel fat fraction (0-1) of a study, computed on request inside a box of the grid.

    Every formula is voxel-wise (:func:`pipeline.calf.fatfraction.ff_magnitude_discrimination`, F / (W + F), or the
    scanner map / its scale), so the box of the whole-volume map equals the map of the box, and no whole-volume
    float64 map and its temporaries are held.
    """

    images: CalfImages
    method: str  # "scanner" | "magnitude_discrimination" | "naive"
    how: str
    roi_signals: bool  # region means from summed signals (:func:`pipeline.calf.fatfraction.roi_ff`)
    scale: float = 1.0  # scanner map values per unit fraction

    def on(self, box: Box | None = None) -> np.ndarray:
        """The fat fraction inside ``box`` (the whole grid when None)."""
        box = box or (slice(None),) * 3  # type: ignore[assignment]
        im = self.images
        if self.method == "scanner":
            assert im.ffmap is not None
            return np.asarray(im.ffmap.array[box], np.float64) / self.scale
        assert im.water is not None and im.fat is not None
        if self.method == "magnitude_discrimination":
            assert im.inphase is not None
            return ff_magnitude_discrimination(im.water.array[box], im.fat.array[box], im.inphase.array[box])
        return ff_naive(im.water.array[box], im.fat.array[box])


def voxel_ff_source(images: CalfImages, cfg: dict[str, Any]) -> VoxelFF | None:
    """How the voxel fat fraction of ``images`` is obtained under ``cfg`` (see :func:`voxel_ff`); None when the
    images carry no fat fraction (``images.no_ff_reason``)."""
    if images.water is None or images.fat is None or images.no_ff_reason:
        return None
    if cfg.get("ff_source") == "scanner" and images.ffmap is not None:
        # ingestion stores every scanner FF map in percent (pipeline.io.ffscale)
        return VoxelFF(images, "scanner", "scanner FF map (percent, set at ingestion)", False, 100.0)
    if cfg.get("ff_method") == "magnitude_discrimination" and images.inphase is not None:
        return VoxelFF(images, "magnitude_discrimination",
                       "magnitude discrimination with the in-phase image (Liu et al. 2007); region FF from summed "
                       "signals", True)
    return VoxelFF(images, "naive", "F/(W+F) from water and fat magnitudes", False)


def voxel_ff(images: CalfImages, cfg: dict[str, Any]) -> tuple[np.ndarray, str, bool]:
    """Voxel fat fraction (0-1) on the whole grid, a description of how it was obtained, and whether region means
    come from summed signals (:func:`pipeline.calf.fatfraction.roi_ff`) rather than from the voxel values."""
    src = voxel_ff_source(images, cfg)
    if src is None:
        raise ValueError(images.no_ff_reason or "no water and fat images")
    return src.on(), src.how, src.roi_signals




def label_boxes(arr: np.ndarray) -> dict[int, Box]:
    """Bounding box (array slices) of every label id > 0 present in ``arr``, in one pass
    (``scipy.ndimage.find_objects``).

    >>> label_boxes(np.array([[[0, 2], [0, 2]]]))
    {2: (slice(0, 1, None), slice(0, 2, None), slice(1, 2, None))}
    """
    return {i + 1: box for i, box in enumerate(find_boxes(arr)) if box is not None}  # type: ignore[misc]


def union_box(boxes: list[Box]) -> Box | None:
    """Smallest box holding every box of ``boxes`` (None when there is none).

    >>> union_box([(slice(0, 2), slice(3, 4), slice(1, 2)), (slice(1, 5), slice(0, 1), slice(1, 3))])
    (slice(0, 5, None), slice(0, 4, None), slice(1, 3, None))
    """
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes))
                 for a in range(3))  # type: ignore[return-value]


def grow_box(box: Box, margin: int, shape: tuple[int, ...], axes: tuple[int, ...]) -> Box:
    """``box`` widened by ``margin`` voxels along ``axes``, clipped to the array ``shape``.

    >>> grow_box((slice(1, 3), slice(0, 2), slice(4, 5)), 2, (10, 10, 10), (0, 1))
    (slice(0, 5, None), slice(0, 4, None), slice(4, 5, None))
    """
    return tuple(slice(max(0, b.start - margin), min(n, b.stop + margin)) if a in axes else b
                 for a, (b, n) in enumerate(zip(box, shape)))  # type: ignore[return-value]


@dataclass
class Region:
    """A structure (or group) cut out of the label map: its bounding box and its boolean mask inside the box.

    Every per-structure computation runs on the box only. Results equal those on the whole volume because the
    structure has no voxel outside its box: counts and sums are unchanged, and the in-plane erosion treats voxels
    beyond the array edge as background (``border_value=0``), which is what they are on the whole volume.
    """

    box: Box | None
    mask: np.ndarray  # bool, shape of the box (empty when the structure is absent)

    @classmethod
    def of(cls, arr: np.ndarray, boxes: dict[int, Box], ids: list[int]) -> Region:
        box = union_box([boxes[i] for i in ids if i in boxes])
        if box is None:
            return cls(None, np.zeros((0, 0, 0), bool))
        crop = arr[box]
        return cls(box, crop == ids[0] if len(ids) == 1 else np.isin(crop, ids))

    def crop(self, volume: np.ndarray) -> np.ndarray:
        """The part of a whole-grid array inside the box."""
        assert self.box is not None
        return volume[self.box]

    def voxels_per_slice(self, axis: int, n_slices: int) -> np.ndarray:
        """Voxel count of the structure on each of the ``n_slices`` slices across ``axis`` (zeros where absent)."""
        counts = np.zeros(n_slices, np.intp)
        if self.box is not None:
            other = tuple(a for a in range(3) if a != axis)
            counts[self.box[axis]] = np.count_nonzero(self.mask, axis=other)
        return counts


def _structure_metrics(region: Region, ff_box: np.ndarray | None, labels: Volume, axis: int, factor: float,
                       z: np.ndarray, cfg: dict[str, Any], images: CalfImages, roi_signals: bool,
                       span: tuple[int, int] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Size and fat-fraction metrics of one structure, and its CSA (mm2) on every slice; ``partial_coverage`` within
    the leg's measured ``span`` (:func:`pipeline.calf.metrics.coverage`).

    CSA_k = n_k x |c_i x c_j| x |n . l| (voxels on slice k, pixel area, obliquity factor; see
    :mod:`pipeline.calf.metrics`); volume = sum_k n_k x voxel volume / 1000 (ml). Fat fraction (``ff_box`` given, muscles
    and groups only; ``ff_box`` is the voxel fat fraction inside the region's box) inside the structure eroded in-plane
    by ``ff_erode_mm`` (the whole structure when nothing is left).
    """
    counts = region.voxels_per_slice(axis, len(z))
    csa = counts * pixel_area_mm2(labels.affine, axis) * factor
    n_voxels = int(counts.sum())
    cov = coverage(csa, span)
    m: dict[str, Any] = {"volume_ml": n_voxels * labels.voxel_volume_mm3 / 1000.0 if n_voxels else None}
    if cov.first is None:
        m.update(max_csa_mm2=None, max_csa_z_mm=None, partial_coverage=None, z_first_mm=None, z_last_mm=None)
        return m, csa
    k = int(np.argmax(csa))
    m.update(max_csa_mm2=float(csa[k]), max_csa_z_mm=float(z[k]), partial_coverage=cov.partial,
             z_first_mm=float(min(z[cov.first], z[cov.last])), z_last_mm=float(max(z[cov.first], z[cov.last])))
    if ff_box is not None:
        px = [float(np.linalg.norm(labels.affine[:3, a])) for a in range(3) if a != axis]
        core = erode_in_plane(region.mask, axis, float(cfg.get("ff_erode_mm", 0.0)), (px[0], px[1]))
        roi = core if core.any() else region.mask
        frac = roi_ff(region.crop(images.water.array)[roi], region.crop(images.fat.array)[roi],
                      region.crop(images.inphase.array)[roi]) if roi_signals and images.inphase is not None else None
        stats = ff_statistics_pct(ff_box, roi, frac)
        m.update(ff_pct=stats["mean"], ff_median_pct=stats["median"], ff_p10_pct=stats["p10"],
                 ff_p90_pct=stats["p90"])
        if stats["mean"] is not None and m["volume_ml"] is not None:
            f = min(max(stats["mean"] / 100.0, 0.0), 1.0)
            m["lean_volume_ml"] = m["volume_ml"] * (1 - f)
            m["fat_volume_ml"] = m["volume_ml"] * f
        m["mercuri_grade"] = mercuri_like_grade(stats["mean"], cfg.get("mercuri_ff_bounds_pct", [10, 20, 40, 60]))
    return m, csa


def slice_ff_means(region: Region, ff_box: np.ndarray, axis: int, slices: np.ndarray) -> list[float]:
    """Mean voxel fat fraction (0-1) of the structure on each slice index of ``slices`` (slices it occupies):
    FF_k = (1 / n_k) sum_{v in structure, slice k} FF_v, over the whole structure (not eroded); ``ff_box`` is the
    voxel fat fraction inside the region's box.

    Slices are views of the box (``np.take`` would first copy the whole array when it is not C-contiguous, as
    NIfTI data are)."""
    assert region.box is not None
    k0 = region.box[axis].start
    out = []
    for k in slices:
        index: list[Any] = [slice(None)] * 3
        index[axis] = int(k) - k0
        out.append(float(ff_box[tuple(index)][region.mask[tuple(index)]].mean()))
    return out


def _girth(arr: np.ndarray, boxes: dict[int, Box], ids: list[int], affine: np.ndarray, axis: int,
           smoothing_px: float, opening_mm: float) -> np.ndarray:
    """Girth per slice of the leg made of labels ``ids``, traced in the leg's bounding box widened in-plane by more
    than the reach of the smoothing kernel (4 sigma, scipy's default truncation) and clipped to the array: the mask is
    zero outside its box, so the smoothed image, and the outline, are the same there as on the whole slice."""
    out = np.full(arr.shape[axis], np.nan)
    leg_box = union_box([boxes[i] for i in ids if i in boxes])
    if leg_box is None:
        return out
    in_plane = tuple(a for a in range(3) if a != axis)
    box = grow_box(leg_box, int(4.0 * smoothing_px + 0.5) + 3, arr.shape, in_plane)
    mask = np.isin(arr[box], ids)
    k0, k1 = box[axis].start, box[axis].stop
    out[k0:k1] = girth_per_slice_mm(mask, affine, axis, smoothing_px, opening_mm)
    return out


def table_row(side: str, structure: str, metric: str, value: Any) -> dict[str, Any]:
    """One row of ``calf/measurements.csv``: a number in ``value`` with its UCUM unit (:func:`pipeline.core.units.ucum`:
    ``mL``, ``mm``, ``mm2``, ``cm``, ``%``, ``{grade}``), a boolean in ``flag`` (no unit).

    >>> table_row("left", "soleus", "partial_coverage", False)["flag"], table_row("left", "soleus", "volume_ml", 1.5)
    (False, {'side': 'left', 'structure': 'soleus', 'metric': 'volume_ml', 'value': 1.5, 'unit': 'mL', 'flag': None})
    """
    if isinstance(value, bool | np.bool_):
        return {"side": side, "structure": structure, "metric": metric, "value": None, "unit": "",
                "flag": bool(value)}
    number = value if value is None or isinstance(value, int | np.integer) else round(float(value), 4)
    return {"side": side, "structure": structure, "metric": metric, "value": number, "unit": ucum(metric),
            "flag": None}


def leg_row(side: str, metric: str, value: float) -> dict[str, Any]:
    """One row of ``calf/legs.csv``: a metric of one leg's outline (its girth) with its UCUM unit.

    >>> leg_row("right", "girth_max_mm", 402.0)
    {'side': 'right', 'metric': 'girth_max_mm', 'value': 402.0, 'unit': 'mm'}
    """
    return {"side": side, "metric": metric, "value": round(float(value), 2), "unit": ucum(metric)}


def asymmetry_row(structure: str, metric: str, value: float | None) -> dict[str, Any]:
    """One row of ``calf/asymmetry.csv``: a right-against-left comparison of a structure, muscle group or (structure
    ``leg``) the leg outline; empty ``value`` where a side lacks the measurement (the reason is in ``summary.json``).

    >>> asymmetry_row("soleus", "volume_ai_pct", 12.0)
    {'structure': 'soleus', 'metric': 'volume_ai_pct', 'value': 12.0, 'unit': '%'}
    """
    return {"structure": structure, "metric": metric, "value": None if value is None else round(float(value), 3),
            "unit": ucum(metric)}


#: the metrics that need a fat fraction: null, with the reason, when the images carry none
FF_METRICS = ("ff_pct", "ff_median_pct", "ff_p10_pct", "ff_p90_pct", "lean_volume_ml", "fat_volume_ml",
              "mercuri_grade")


def _measure_side(side: str, labels: Volume, arr: np.ndarray, boxes: dict[int, Box], ff: VoxelFF | None,
                  reg: Registry,
                  cfg: dict[str, Any], axis: int, z: np.ndarray, images: CalfImages
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray], list[dict[str, Any]]]:
    """Metrics and CSA profile of every structure and group of one side, and the per-slice rows of its muscles."""
    groups = reg.groups()
    tibia = Region.of(arr, boxes, [reg.sided_id("tibia", side)])
    leg_axis = (leg_axis_from_mask(labels, tibia.mask, axis, origin=tuple(b.start for b in tibia.box))
                if tibia.box is not None else np.array([0.0, 0.0, 1.0]))
    factor = obliquity_factor(labels.affine, axis, leg_axis)
    metrics: dict[str, dict[str, Any]] = {}
    csas: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    with_ff = {*reg.muscles, *(m for members in groups.values() for m in members)}
    leg_box = union_box([boxes[lab.id] for lab in reg.labels if lab.side == side and lab.id in boxes])
    span = None if leg_box is None else (leg_box[axis].start, leg_box[axis].stop - 1)  # the slices measured
    muscle_box = union_box([boxes[i] for i in (reg.sided_id(m, side) for m in with_ff) if i in boxes])
    ff_muscles = ff.on(muscle_box) if muscle_box is not None and ff is not None else None  # once per side
    for name in [*reg.structures, *groups]:
        region = Region.of(arr, boxes, [reg.sided_id(mm, side) for mm in groups.get(name, (name,))])
        is_muscle = name in groups or reg.structures[name].get("kind") == "muscle"
        ff_box = None
        if is_muscle and region.box is not None and ff_muscles is not None and muscle_box is not None:
            ff_box = ff_muscles[tuple(slice(b.start - m.start, b.stop - m.start)
                                      for b, m in zip(region.box, muscle_box))]
        metrics[name], csas[name] = _structure_metrics(region, ff_box, labels, axis, factor, z, cfg, images,
                                                       ff is not None and ff.roi_signals, span)
        if is_muscle and ff is None:
            metrics[name].update(dict.fromkeys(FF_METRICS))
        if is_muscle and name not in groups:
            occupied = np.nonzero(csas[name])[0]
            means = slice_ff_means(region, ff_box, axis, occupied) if ff_box is not None else [None] * len(occupied)
            for k, mean in zip(occupied, means):
                rows.append({"z_mm": round(float(z[k]), 3), "side": side, "muscle": name,
                             "csa_mm2": round(float(csas[name][k]), 3),
                             "ff_pct": None if mean is None else round(100 * mean, 3)})
    return metrics, csas, rows


def matched_slab(z_mm: np.ndarray, k: int, half_width_mm: float) -> np.ndarray:
    """The slices of the matched level: those whose position ``z_mm`` (mm along the slice axis) lies within
    ``half_width_mm`` of slice ``k``, the slice of the largest cross-section of a structure summed over both legs.

    The matched CSA of each leg is the mean of its CSA over these slices, CSA_matched = (1 / |W|) sum_{j in W} CSA_j
    with W = {j : |z_j - z_k| <= half width}, i.e. the volume of a slab of that width divided by its length; 0 takes
    the one slice k. One slice is as noisy as the segmentation of that slice (an artefact, a border drawn one
    voxel off on a small muscle); the slab keeps the level and averages that noise.

    >>> matched_slab(np.array([0.0, 5.0, 10.0, 15.0, 20.0]), 2, 5.0).tolist()
    [False, True, True, True, False]
    """
    return np.abs(np.asarray(z_mm, np.float64) - float(z_mm[k])) <= half_width_mm + 1e-6


def measure_calf_labels(labels: Volume, images: CalfImages, reg: Registry, cfg: dict[str, Any]) -> CalfMeasurements:
    """All calf measurements of one study."""
    res = CalfMeasurements()
    arr = np.asarray(labels.array)
    axis = slice_axis(labels)
    z = slice_positions_mm(labels, axis)
    ff = voxel_ff_source(images, cfg)
    res.notes.append(f"fat fraction: {ff.how}" if ff is not None else f"fat fraction: {images.no_ff_reason}")
    by_id = reg.by_id()
    boxes = label_boxes(arr)
    present = sorted({by_id[i].side for i in boxes if i in by_id})
    s = res.summary
    s.set("calf.available", True)
    s.set("calf.legs_present", ",".join(present))
    groups = reg.groups()
    structures = list(reg.structures)
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    csas: dict[str, dict[str, np.ndarray]] = {}
    girth: dict[str, np.ndarray] = {}
    for side in present:
        metrics[side], csas[side], slice_rows = _measure_side(side, labels, arr, boxes, ff, reg, cfg, axis, z, images)
        res.slices += slice_rows
        ids = [lab.id for lab in reg.labels if lab.side == side]
        girth[side] = _girth(arr, boxes, ids, labels.affine, axis, float(cfg.get("girth_smoothing_px", 1.0)),
                             float(cfg.get("girth_opening_mm", 0.0)))
    muscle_csa = {side: shaft_level_muscle_csa(sum(csas[side][m] for m in reg.muscles),
                                               csas[side]["tibia"] + csas[side]["fibula"],
                                               sum(csas[side][n] for n in structures),
                                               float(cfg.get("girth_max_bone_fraction", 0.2)))
                  for side in present}
    girth_rule = (float(cfg.get("girth_min_muscle_fraction", 0.5)), int(cfg.get("girth_edge_slices", 1)),
                  float(cfg.get("girth_outlier_fraction", 0.03)))
    # matched levels (same slice = same world z for both legs)
    half_width = float(cfg["matched_csa_half_width_mm"])
    for name in [*structures, *groups]:
        total = sum(csas[sd][name] for sd in present)
        if np.any(total > 0):
            k = int(np.argmax(total))
            slab = matched_slab(z, k, half_width)
            for side in present:
                metrics[side][name]["matched_csa_mm2"] = float(np.mean(csas[side][name][slab]))
                metrics[side][name]["matched_z_mm"] = float(z[k])
    # per-side summary and rows
    for side in present:
        for name, m in metrics[side].items():
            for key, value in m.items():
                if key == "matched_z_mm":
                    continue
                full = f"calf.{side}.{name}.{key}"
                if value is None:
                    s.set_null(full, images.no_ff_reason if ff is None and key in FF_METRICS
                               and m.get("volume_ml") is not None else f"{name} not found on the {side} side")
                else:
                    s.set(full, round(value, 4) if isinstance(value, float) else value)
                res.rows.append(table_row(side, name, key, value))
        g = girth[side]
        k = max_girth_slice(g, muscle_csa[side], *girth_rule) if not np.all(np.isnan(g)) else None
        if k is None:
            s.set_null(f"calf.{side}.girth_max_mm", "no muscle-bearing slice with a leg outline")
        else:
            s.set(f"calf.{side}.girth_max_mm", round(float(g[k]), 2))
            s.set(f"calf.{side}.girth_max_z_mm", round(float(z[k]), 2))
            res.legs += [leg_row(side, "girth_max_mm", float(g[k])), leg_row(side, "girth_max_z_mm", float(z[k]))]
        for k in np.nonzero(~np.isnan(girth[side]))[0]:
            res.slices.append({"z_mm": round(float(z[k]), 3), "side": side, "muscle": "leg_girth",
                               "csa_mm2": None, "ff_pct": None, "girth_mm": round(float(girth[side][k]), 2)})
    _asymmetry(res, metrics, girth, z, present, [*structures, *groups], muscle_csa, girth_rule,
               images.no_ff_reason if ff is None else None)
    return res


def _asymmetry(res: CalfMeasurements, metrics, girth, z, present, names, muscle_csa, girth_rule,
               no_ff_reason: str | None) -> None:
    s = res.summary
    if set(present) != set(SIDES):
        reason = f"only the {present[0] if present else 'no'} leg in the field of view"
        for name in names:
            for key in (*AI_METRICS.values(), "ff_diff_pp"):
                s.set_null(f"calf.asymmetry.{name}.{key}", reason)
        s.set_null("calf.asymmetry.girth_diff_cm", reason)
        s.set_null("calf.girth_matched_z_mm", reason)
        return
    for name in names:
        r, l_ = metrics["right"][name], metrics["left"][name]
        for src, key in AI_METRICS.items():
            ai = asymmetry_index_pct(r.get(src), l_.get(src))
            _put(res, name, key, ai, no_ff_reason if no_ff_reason and src in FF_METRICS
                 else f"{src} of {name} missing on a side")
        if "ff_pct" in r:
            _put(res, name, "ff_diff_pp", difference(r.get("ff_pct"), l_.get("ff_pct")),
                 no_ff_reason or f"FF of {name} missing")
    k = matched_girth_slice([girth["right"], girth["left"]], [muscle_csa["right"], muscle_csa["left"]], *girth_rule)
    if k is None:
        s.set_null("calf.asymmetry.girth_diff_cm", "no muscle-bearing slice shows both legs")
        s.set_null("calf.girth_matched_z_mm", "no muscle-bearing slice shows both legs")
        return
    s.set("calf.girth_matched_z_mm", round(float(z[k]), 2))
    for side in SIDES:
        s.set(f"calf.{side}.girth_matched_mm", round(float(girth[side][k]), 2))
        res.legs.append(leg_row(side, "girth_matched_mm", float(girth[side][k])))
    _put(res, "leg", "girth_diff_cm", difference(float(girth["right"][k]), float(girth["left"][k]), 0.1), "")


def _put(res: CalfMeasurements, name: str, key: str, value: float | None, reason: str) -> None:
    full = "calf.asymmetry.girth_diff_cm" if key == "girth_diff_cm" else f"calf.asymmetry.{name}.{key}"
    if value is None:
        res.summary.set_null(full, reason)
    else:
        res.summary.set(full, round(float(value), 3))
    res.asymmetry.append(asymmetry_row(name, key, value))
