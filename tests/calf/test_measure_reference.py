"""The optimised calf measurement (bounding boxes, one pass for the label boxes) gives the results of a straightforward
whole-volume implementation, kept here as the reference: on small random label volumes with empty structures,
one-slice structures, tied maximal cross-sections, one leg, oblique slices and slices stacked along another array axis."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage import measure as skmeasure

from pipeline.calf import measure as M
from pipeline.calf.fatfraction import erode_in_plane, ff_statistics_pct, roi_ff, structure_ff_rows
from pipeline.calf.girth import (
    fill_holes_in_plane,
    girth_per_slice_mm,
    max_girth_slice,
    polygon_perimeter_mm,
    shaft_level_muscle_csa,
)
from pipeline.calf.metrics import (
    coverage,
    csa_per_slice_mm2,
    leg_axis_from_mask,
    obliquity_factor,
    slice_axis,
    slice_positions_mm,
    volume_ml,
)
from pipeline.core.config import load_config
from pipeline.core.labels import Registry, registry
from pipeline.core.volume import Volume

REG = registry("calf")
CFG = load_config("default")["calf"]


# -- reference: whole-volume masks, one structure and one slice at a time ------------------------------------------
def ref_erode_in_plane(mask: np.ndarray, axis: int, erode_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Erosion by the in-plane rectangle as one 3-D structuring element (scipy, voxels beyond the edge background)."""
    if erode_mm <= 0:
        return mask
    r = [max(1, int(round(erode_mm / p))) for p in pixel_mm]
    struct = np.expand_dims(np.ones((2 * r[0] + 1, 2 * r[1] + 1), bool), axis)
    return ndimage.binary_erosion(mask, structure=struct)


def ref_girth_per_slice_mm(leg_mask: np.ndarray, affine: np.ndarray, axis: int, smoothing_px: float,
                           opening_mm: float = 0.0) -> np.ndarray:
    """Girth slice by slice: opening by a disc, holes filled, Gaussian, outline and its convex hull of each slice on
    its own."""
    axes = tuple(a for a in range(3) if a != axis)
    out = np.full(leg_mask.shape[axis], np.nan)
    r = [opening_mm / float(np.linalg.norm(affine[:3, a])) for a in axes]
    yy, xx = np.mgrid[-int(r[0]):int(r[0]) + 1, -int(r[1]):int(r[1]) + 1] if opening_mm > 0 else (0, 0)
    disc = (yy / r[0]) ** 2 + (xx / r[1]) ** 2 <= 1.0 if opening_mm > 0 else None
    for k in range(leg_mask.shape[axis]):
        sl = np.take(leg_mask, k, axis=axis)
        if disc is not None:
            sl = ndimage.binary_opening(sl, structure=disc)
        sl = ndimage.binary_fill_holes(sl)
        if sl.sum() < 10:
            continue
        img = ndimage.gaussian_filter(sl.astype(float), smoothing_px) if smoothing_px > 0 else sl.astype(float)
        contours = skmeasure.find_contours(np.pad(img, 2), 0.5)
        if contours:
            best = max(contours, key=len) - 2
            out[k] = polygon_perimeter_mm(best[ConvexHull(best).vertices], affine, axes)  # type: ignore[arg-type]
    return out


def ref_leg_axis(volume: Volume, mask: np.ndarray, axis: int) -> np.ndarray:
    cents = []
    for k in range(mask.shape[axis]):
        sl = np.take(mask, k, axis=axis)
        if sl.sum() < 5:
            continue
        idx = np.insert(np.argwhere(sl).mean(axis=0), axis, k)
        cents.append(volume.voxel_to_world(idx[None])[0])
    if len(cents) < 3:
        return np.array([0.0, 0.0, 1.0])
    c = np.array(cents)
    d = np.linalg.svd(c - c.mean(axis=0))[2][0]
    return d if d[2] >= 0 else -d


def ref_structure(mask: np.ndarray, ff: np.ndarray | None, labels: Volume, axis: int, factor: float, z: np.ndarray,
                  cfg: dict[str, Any], images: M.CalfImages, roi_signals: bool, span: tuple[int, int]
                  ) -> tuple[dict[str, Any], np.ndarray]:
    csa = csa_per_slice_mm2(mask, labels.affine, axis, factor)
    cov = coverage(csa, span)
    m: dict[str, Any] = {"volume_ml": volume_ml(mask, labels.voxel_volume_mm3) if mask.any() else None}
    if cov.first is None:
        m.update(max_csa_mm2=None, max_csa_z_mm=None, partial_coverage=None, z_first_mm=None, z_last_mm=None)
        return m, csa
    k = int(np.argmax(csa))
    m.update(max_csa_mm2=float(csa[k]), max_csa_z_mm=float(z[k]), partial_coverage=cov.partial,
             z_first_mm=float(min(z[cov.first], z[cov.last])), z_last_mm=float(max(z[cov.first], z[cov.last])))
    if ff is not None:
        px = [float(np.linalg.norm(labels.affine[:3, a])) for a in range(3) if a != axis]
        core = ref_erode_in_plane(mask, axis, float(cfg.get("ff_erode_mm", 0.0)), (px[0], px[1]))
        roi = core if core.any() else mask
        frac = roi_ff(images.water.array[roi], images.fat.array[roi], images.inphase.array[roi]) if roi_signals \
            else None
        stats = ff_statistics_pct(ff, roi, frac)
        m.update(ff_pct=stats["mean"], ff_median_pct=stats["median"], ff_p10_pct=stats["p10"],
                 ff_p90_pct=stats["p90"])
        if stats["mean"] is not None and m["volume_ml"] is not None:
            f = min(max(stats["mean"] / 100.0, 0.0), 1.0)
            m["lean_volume_ml"] = m["volume_ml"] * (1 - f)
            m["fat_volume_ml"] = m["volume_ml"] * f
        m["mercuri_grade"] = M.mercuri_like_grade(stats["mean"], cfg.get("mercuri_ff_bounds_pct", [10, 20, 40, 60]))
    return m, csa


def reference_measure(labels: Volume, images: M.CalfImages, reg: Registry, cfg: dict[str, Any]) -> M.CalfMeasurements:
    res = M.CalfMeasurements()
    arr = np.asarray(labels.array)
    axis = slice_axis(labels)
    z = slice_positions_mm(labels, axis)
    ff, how, roi_signals = M.voxel_ff(images, cfg)
    res.notes.append(f"fat fraction: {how}")
    by_id = reg.by_id()
    present = sorted({by_id[i].side for i in np.unique(arr) if i in by_id})
    s = res.summary
    s.set("calf.available", True)
    s.set("calf.legs_present", ",".join(present))
    groups = reg.groups()
    names = [*reg.structures, *groups]
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    csas: dict[str, dict[str, np.ndarray]] = {}
    girth: dict[str, np.ndarray] = {}
    for side in present:
        leg = np.isin(arr, [lab.id for lab in reg.labels if lab.side == side])
        on = np.flatnonzero(leg.any(axis=tuple(a for a in range(3) if a != axis)))
        span = (int(on[0]), int(on[-1]))
        factor = obliquity_factor(labels.affine, axis,
                                  ref_leg_axis(labels, arr == reg.sided_id("tibia", side), axis))
        metrics[side], csas[side] = {}, {}
        for name in names:
            mask = np.isin(arr, [reg.sided_id(mm, side) for mm in groups.get(name, (name,))])
            is_muscle = name in groups or reg.structures[name].get("kind") == "muscle"
            metrics[side][name], csas[side][name] = ref_structure(mask, ff if is_muscle else None, labels, axis,
                                                                  factor, z, cfg, images, roi_signals, span)
            if is_muscle and name not in groups:
                for k in np.nonzero(csas[side][name])[0]:
                    sl_mask = np.take(mask, k, axis=axis)
                    res.slices.append({"z_mm": round(float(z[k]), 3), "side": side, "muscle": name,
                                       "csa_mm2": round(float(csas[side][name][k]), 3),
                                       "ff_pct": round(100 * float(np.take(ff, k, axis=axis)[sl_mask].mean()), 3)})
        girth[side] = ref_girth_per_slice_mm(leg, labels.affine, axis, float(cfg.get("girth_smoothing_px", 1.0)),
                                             float(cfg.get("girth_opening_mm", 0.0)))
    for name in names:
        total = sum(csas[sd][name] for sd in present)
        if np.any(total > 0):
            k = int(np.argmax(total))
            near = [j for j in range(len(z)) if abs(z[j] - z[k]) <= float(cfg["matched_csa_half_width_mm"]) + 1e-6]
            for side in present:
                metrics[side][name]["matched_csa_mm2"] = sum(float(csas[side][name][j]) for j in near) / len(near)
                metrics[side][name]["matched_z_mm"] = float(z[k])
    # the rows are written from these dicts by the code under test (M._rows_and_summary is not part of the check):
    res.metrics, res.girth, res.csas = metrics, girth, csas  # type: ignore[attr-defined]
    return res


# -- random studies ------------------------------------------------------------------------------------------------
def random_study(seed: int, shape: tuple[int, int, int] = (30, 26, 7), sides: tuple[str, ...] = ("left", "right"),
                 affine: np.ndarray | None = None, slice_axis_: int = 2) -> tuple[Volume, M.CalfImages]:
    """Random rectangles of random sided labels (later ones overwrite earlier ones), some structures left out, one
    structure on a single slice, one with the same area on two slices (a tie for the maximum). ``shape`` is
    (rows, columns, slices); the slices are stacked along array axis ``slice_axis_``."""
    rng = np.random.default_rng(seed)
    arr = np.zeros(shape, np.int16)
    n = shape[2]
    for side in sides:
        x0 = 0 if side == "right" else shape[0] // 2
        region = arr[x0:x0 + shape[0] // 2]
        region[2:6, 3:7, :] = REG.sided_id("tibia", side)  # a tibia on every slice (leg axis from >= 3 slices)
        for name in rng.permutation(list(REG.structures)):
            if name == "tibia" or rng.random() < 0.2:
                continue  # empty structure
            lo = [int(rng.integers(0, s - 2)) for s in region.shape]
            hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, region.shape)]
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            fill = rng.random(tuple(b - a for a, b in zip(lo, hi))) < rng.uniform(0.5, 1.0)
            region[box][fill] = REG.sided_id(str(name), side)
        region[1:-1, 1:4, n // 2] = REG.sided_id("flexor_hallucis_longus", side)  # on one slice only
        for k in (1, n - 2):  # the same area on two slices
            region[-4:-1, -5:, k] = REG.sided_id("peroneus", side)
    water = rng.uniform(10, 200, shape)
    fat = rng.uniform(0, 150, shape)
    inphase = water + fat + rng.normal(0, 5, shape)
    arr, water, fat, inphase = (np.ascontiguousarray(np.moveaxis(a, 2, slice_axis_))
                                for a in (arr, water, fat, inphase))
    labels = Volume(arr, np.diag([0.8, 0.7, 4.0, 1.0]) if affine is None else affine)
    return labels, M.CalfImages(labels.with_array(water), labels.with_array(fat), labels.with_array(inphase))


def oblique_affine() -> np.ndarray:
    th = np.radians(20)
    aff = np.eye(4)
    aff[:3, 0] = [0.9, 0, 0]
    aff[:3, 1] = [0, 0.7 * np.cos(th), 0.7 * np.sin(th)]
    aff[:3, 2] = [0, -3.0 * np.sin(th), 3.0 * np.cos(th)]
    aff[:3, 3] = [-10, 4, 30]
    return aff


def slices_along_axis0() -> np.ndarray:
    """Slices stacked along array axis 0 (world z), rows along x, columns along y."""
    aff = np.zeros((4, 4))
    aff[2, 0], aff[0, 1], aff[1, 2], aff[3, 3] = 5.0, 0.9, 0.8, 1.0
    return aff


def compare(labels: Volume, images: M.CalfImages, cfg: dict[str, Any]) -> M.CalfMeasurements:
    got = M.measure_calf_labels(labels, images, REG, cfg)
    ref = reference_measure(labels, images, REG, cfg)
    assert [r for r in got.slices if r["muscle"] != "leg_girth"] == ref.slices
    assert got.notes == ref.notes
    rows = {(r["side"], r["structure"], r["metric"]): r["value"] if r["flag"] is None else r["flag"]
            for r in got.rows}
    legs = {(r["side"], r["metric"]): r["value"] for r in got.legs}
    n_checked = 0
    for side, per in ref.metrics.items():  # type: ignore[attr-defined]
        for name, m in per.items():
            for key, value in m.items():
                if key == "matched_z_mm":
                    continue
                want = None if value is None else round(value, 4) if isinstance(value, float) else value
                assert rows[(side, name, key)] == want, (side, name, key)
                n_checked += 1
        g_ref = ref.girth[side]  # type: ignore[attr-defined]
        c = ref.csas[side]  # type: ignore[attr-defined]
        bearing = shaft_level_muscle_csa(sum(c[m] for m in REG.muscles), c["tibia"] + c["fibula"],
                                         sum(c[n] for n in REG.structures), cfg.get("girth_max_bone_fraction", 0.2))
        k = max_girth_slice(g_ref, bearing, cfg.get("girth_min_muscle_fraction", 0.5), cfg.get("girth_edge_slices", 1),
                            cfg.get("girth_outlier_fraction", 0.03)) if not np.all(np.isnan(g_ref)) else None
        if k is not None:  # the level rule itself: pipeline.calf.girth doctests
            assert legs[(side, "girth_max_mm")] == round(float(g_ref[k]), 2)
        girth_rows = [r["girth_mm"] for r in got.slices if r["side"] == side and r["muscle"] == "leg_girth"]
        assert girth_rows == [round(float(v), 2) for v in g_ref[~np.isnan(g_ref)]]
    assert n_checked > 100
    return got


@pytest.mark.parametrize("seed", range(6))
def test_random_two_leg_studies_match_the_reference(seed):
    compare(*random_study(seed), CFG)


def test_a_leg_with_slices_left_out_at_its_ends_matches_the_reference():
    """Slices left out of one leg at both ends (as pipeline.calf.extent does): a structure that reaches the last kept
    slice is partial, as at the end of the stack."""
    labels, images = random_study(14, shape=(30, 26, 9))
    arr = np.array(labels.array)
    left = np.isin(arr, [lab.id for lab in REG.labels if lab.side == "left"])
    arr[left & (np.arange(9) < 2)[None, None, :]] = 0
    arr[left & (np.arange(9) > 7)[None, None, :]] = 0
    got = compare(labels.with_array(arr), images, CFG)
    flags = {(r["side"], r["structure"], r["metric"]): r["flag"] for r in got.rows}
    assert flags[("left", "tibia", "partial_coverage")] is True  # on every kept slice, stack ends never reached


def test_one_leg_study_matches_the_reference():
    got = compare(*random_study(11, sides=("left",)), CFG)
    assert got.summary.get("calf.legs_present") == "left"


def test_oblique_slices_match_the_reference():
    labels, images = random_study(12, shape=(28, 24, 8), affine=oblique_affine())
    compare(labels, images, CFG)


def test_slices_along_another_array_axis_match_the_reference():
    labels, images = random_study(13, shape=(30, 24, 6), affine=slices_along_axis0(), slice_axis_=0)
    assert slice_axis(labels) == 0
    compare(labels, images, CFG)


def test_naive_ff_without_erosion_matches_the_reference():
    labels, images = random_study(14)
    compare(labels, M.CalfImages(images.water, images.fat), {**CFG, "ff_erode_mm": 0.0, "ff_method": "naive"})


def test_structures_touching_the_array_edges_match_the_reference():
    """Erosion and girth at the edge of the array (boxes clipped by the array)."""
    labels, images = random_study(15, shape=(12, 10, 5))
    arr = np.asarray(labels.array).copy()
    arr[:, :, :][arr == 0] = REG.sided_id("soleus", "right")
    compare(labels.with_array(arr), images, CFG)


def test_leg_axis_of_a_box_equals_that_of_the_whole_volume():
    rng = np.random.default_rng(3)
    mask = np.zeros((20, 18, 9), bool)
    for k in range(9):
        mask[3 + k // 2:8 + k // 2, 4 + k % 3:9, k] = rng.random((5, 9 - 4 - k % 3)) < 0.8
    vol = Volume(mask, oblique_affine())
    whole = ref_leg_axis(vol, mask, 2)
    box = (slice(3, 13), slice(4, 9), slice(0, 9))
    assert np.array_equal(leg_axis_from_mask(vol, mask[box], 2, origin=(3, 4, 0)), whole)
    assert np.array_equal(leg_axis_from_mask(vol, mask, 2), whole)


def test_scanner_ff_map_matches_the_reference():
    labels, images = random_study(16)
    ffmap = labels.with_array(np.random.default_rng(16).uniform(0, 100, labels.shape))  # percent, as ingestion stores it
    compare(labels, M.CalfImages(images.water, images.fat, images.inphase, ffmap), {**CFG, "ff_source": "scanner"})


@pytest.mark.parametrize("seed", range(4))
def test_in_plane_erosion_and_hole_filling_match_scipy(seed):
    """Line-by-line erosion and one labelling of all slices' background give scipy's rectangle erosion and per-slice
    ``binary_fill_holes``, on every slice axis, radius and array edge."""
    rng = np.random.default_rng(seed)
    for _ in range(30):
        shape = tuple(int(n) for n in rng.integers(1, 14, 3))
        mask = rng.random(shape) < rng.uniform(0.3, 0.95)
        mask = np.asfortranarray(mask) if rng.random() < 0.5 else mask
        axis = int(rng.integers(0, 3))
        pixel = (float(rng.uniform(0.4, 1.2)), float(rng.uniform(0.4, 1.2)))
        erode_mm = float(rng.choice([0.0, 0.5, 1.0, 1.5, 2.5]))
        assert np.array_equal(erode_in_plane(mask, axis, erode_mm, pixel),
                              ref_erode_in_plane(mask, axis, erode_mm, pixel))
        filled = np.stack([ndimage.binary_fill_holes(np.take(mask, k, axis=axis)) for k in range(shape[axis])],
                          axis=axis)
        assert np.array_equal(fill_holes_in_plane(mask, axis), filled)


@pytest.mark.parametrize("axis", [0, 2])
def test_girth_of_all_slices_at_once_matches_slice_by_slice(axis):
    """Leg outlines with holes, several pieces and empty slices: the same girth, to the last bit."""
    rng = np.random.default_rng(axis)
    mask = np.zeros((40, 36, 9), bool)
    yy, xx = np.mgrid[:40, :36]
    for k in range(1, 9):
        mask[:, :, k] = (yy - 20) ** 2 / (8 + k) ** 2 + (xx - 18) ** 2 / (10 + k % 3) ** 2 < 1
        mask[:, :, k] &= rng.random((40, 36)) < 0.93  # holes and ragged edges
        mask[2:4, 30:34, k] = k % 2 == 0  # a second piece
    mask = np.moveaxis(mask, 2, axis)
    affine = oblique_affine() if axis == 2 else slices_along_axis0()
    for smoothing, opening in ((0.0, 0.0), (1.0, 0.0), (1.5, 0.0), (1.5, 2.0)):
        assert np.array_equal(girth_per_slice_mm(mask, affine, axis, smoothing, opening),
                              ref_girth_per_slice_mm(mask, affine, axis, smoothing, opening), equal_nan=True)


def test_ff_map_rows_match_whole_volume_masks():
    """Mean, median and core median of the FF map per structure: boxes against whole-volume masks."""
    labels, _ = random_study(17)
    arr = np.asarray(labels.array)
    ff = np.asfortranarray(np.random.default_rng(17).uniform(0, 100, arr.shape).astype(np.float32))
    names = {REG.sided_id(m, side): (side, m) for m in REG.muscles for side in ("left", "right")}
    got = structure_ff_rows(np.asfortranarray(arr), ff, names, 2, (0.8, 0.7), 1.5)
    want = []
    for lid, (side, name) in names.items():
        mask = arr == lid
        if not mask.any():
            continue
        core = ref_erode_in_plane(mask, 2, 1.5, (0.8, 0.7))
        core = core if core.any() else mask
        vals = np.asarray(ff, np.float64)
        for metric, value in (("ff_map_mean_pct", np.mean(vals[mask])), ("ff_map_median_pct", np.median(vals[mask])),
                              ("ff_map_core_median_pct", np.median(vals[core]))):
            want.append({"side": side, "structure": name, "metric": metric, "value": round(float(value), 3),
                         "unit": "%"})
    assert got == want and len(want) > 20


def test_boxes_of_fortran_ordered_labels_match_find_objects():
    from pipeline.calf.metrics import find_boxes

    rng = np.random.default_rng(2)
    for _ in range(50):
        arr = rng.integers(0, 9, size=tuple(int(n) for n in rng.integers(1, 10, 3))).astype(np.int16)
        arr[rng.random(arr.shape) < 0.5] = 0
        for a in (arr, np.asfortranarray(arr), arr[:, ::2]):
            assert find_boxes(a) == ndimage.find_objects(a)
