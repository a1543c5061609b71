"""Per-level lumbar canal measurements, grades and roots at risk -> tidy rows and the spine section of summary.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.geometry import SIDES
from pipeline.core.labels import Registry
from pipeline.core.summary import Summary
from pipeline.core.volume import Volume
from pipeline.spine import canal
from pipeline.spine.levels import DISC_LEVELS, LevelResult

LEVEL_ORDER = tuple(reversed(DISC_LEVELS))  # L1-L2 ... L5-S1
#: the network classes whose probability maps bound the lateral recess (``wall_axials`` of :func:`measure_levels`)
RECESS_WALLS = ("disc", "posterior_elements")


@dataclass
class SpineMeasurements:
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    #: per level, where each value was measured (world RAS mm), for the QA pictures: ``slice_point_ras`` (a point
    #: on the axial slice measured), ``ap_line_ras`` and ``<side>.lateral_recess_line_ras`` ([start, end])
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)


def central_grade(dsca: float | None, cfg: dict[str, Any]) -> str | None:
    """normal / relative / absolute stenosis from the dural sac area (thresholds in configs/default.yaml).

    >>> central_grade(70.0, {"dsca_absolute_mm2": 75, "dsca_relative_mm2": 100})
    'absolute'
    """
    if dsca is None:
        return None
    if dsca < cfg["dsca_absolute_mm2"]:
        return "absolute"
    return "relative" if dsca < cfg["dsca_relative_mm2"] else "normal"


def recess_grade(depth: float | None, cfg: dict[str, Any]) -> str | None:
    """normal / narrowed from the lateral recess depth.

    >>> recess_grade(2.0, {"lateral_recess_narrowed_mm": 3.0})
    'narrowed'
    """
    if depth is None:
        return None
    return "narrowed" if depth < cfg["lateral_recess_narrowed_mm"] else "normal"


def foramen_grade(area: float | None, cfg: dict[str, Any]) -> int | None:
    """Grade 0-3 from the foraminal area (surrogate of Lee et al. 2010; bounds in configs/default.yaml).

    >>> [foramen_grade(a, {"foramen_grade_bounds_mm2": [40, 60, 85]}) for a in (30, 50, 70, 120)]
    [3, 2, 1, 0]
    """
    if area is None:
        return None
    for grade, bound in zip((3, 2, 1), cfg["foramen_grade_bounds_mm2"]):
        if area < bound:
            return grade
    return 0


def _mask(arr: np.ndarray, reg: Registry, *names: str) -> np.ndarray:
    ids = [lab.id for lab in reg.labels if lab.structure in names]
    return np.isin(arr, ids)


def measure_levels(levels: LevelResult, sag: Volume, axials: list[Volume], reg: Registry, cfg: dict[str, Any],
                   innervation: dict[str, Any] | None, sac_sag: Volume | None = None,
                   sac_axials: list[Volume | None] | None = None,
                   wall_axials: list[dict[str, Volume] | None] | None = None) -> SpineMeasurements:
    """Measure every disc level L1-L2 .. L5-S1 found in ``levels``; missing values are null with the reason.

    ``sac_sag`` / ``sac_axials`` (optional, on the grids of ``sag`` / ``axials``) are the dural sac probability
    maps of the segmentation: where given, the AP diameter is read where they cross 0.5 on axial slices and
    ``cfg["sagittal_ap_wall_level"]`` on the sagittal image (sub-voxel walls) instead of at the border of the label
    map. ``wall_axials`` (optional, one per axial stack) holds the ``disc`` and ``posterior_elements`` probability
    maps of a stack: where given, the lateral recess is measured between their 0.5 levels.
    """
    res = SpineMeasurements()
    s = res.summary
    s.set("spine.available", True)
    s.set("spine.levels_method", levels.method)
    s.set("spine.levels_confidence", round(levels.confidence, 2))
    if levels.flags:
        s.set("spine.levels_flags", "; ".join(levels.flags))
    sag_arr = np.asarray(sag.array)
    sag_axis = canal.acquisition_axis(sag)
    sag_sac = _mask(sag_arr, reg, "dural_sac")
    sag_sac_wall = sag_sac if sac_sag is None else np.asarray(sac_sag.array, np.float32)
    sag_level = 0.5 if sac_sag is None else float(cfg["sagittal_ap_wall_level"])
    contents = _mask(sag_arr, reg, "epidural_fat", "nerve_root")
    soft_ax = list(sac_axials) if sac_axials is not None else [None] * len(axials)
    walls_ax = list(wall_axials) if wall_axials is not None else [None] * len(axials)
    for prob, labels in [(sac_sag, sag), *zip(soft_ax, axials),
                         *((w[k], v) for w, v in zip(walls_ax, axials) if w for k in RECESS_WALLS)]:
        if prob is not None and not prob.same_grid(labels):
            raise ValueError("a probability map is not on the grid of its label map")
    ax_masks = [(v, canal.acquisition_axis(v), np.asarray(v.array), p, w) for v, p, w in zip(axials, soft_ax, walls_ax)]
    for level in LEVEL_ORDER:
        disc = levels.discs.get(level)
        if disc is None:
            reason = "; ".join(levels.flags) or f"disc {level} not found"
            for key in ("dsca_mm2", "ap_diameter_mm", "central_grade"):
                s.set_null(f"spine.{level}.{key}", reason)
            for side in SIDES:
                for key in ("lateral_recess_depth_mm", "lateral_recess_grade", "foramen_area_mm2", "foramen_grade"):
                    s.set_null(f"spine.{level}.{side}.{key}", reason)
            continue
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        pick = None
        for vol, axis, arr, soft, walls in ax_masks:
            p = canal.nearest_slice(vol, axis, disc.center_ras, disc.normal_ras, cfg["max_disc_distance_mm"])
            if p is not None and (pick is None or p.distance_mm < pick[1].distance_mm):
                pick = (vol, p, axis, arr, soft, walls)
        half_width = 10.0
        if pick is None:
            no_ax = f"no axial slice within {cfg['max_disc_distance_mm']} mm of the {level} disc plane"
            reasons["dsca_mm2"] = no_ax
            for side in SIDES:
                reasons[f"{side}.lateral_recess_depth_mm"] = no_ax
            ap = canal.ap_line(sag_sac_wall, sag, disc.center_ras, disc.normal_ras, cfg["ap_bridge_gap_mm"],
                               behind=True, level=sag_level)
            if ap is not None:
                values["ap_diameter_mm"] = ap[0]
        else:
            vol, p, axis, arr, soft, walls = pick
            sac = _mask(arr, reg, "dural_sac")
            values["dsca_mm2"] = canal.dsca_mm2(sac, vol, axis, p)
            c = canal.sac_centroid(sac, vol, axis, p.k)
            if c is None:
                reasons["ap_diameter_mm"] = f"no dural sac on the axial slice through {level}"
            else:
                marks = res.marks.setdefault(level, {"slice_point_ras": c.round(2).tolist()})
                ap = canal.ap_line(sac if soft is None else np.asarray(soft.array, np.float32), vol, c,
                                   disc.normal_ras, bridge_mm=cfg["ap_bridge_gap_mm"])
                values["ap_diameter_mm"] = None if ap is None else ap[0]
                if ap is not None:
                    marks["ap_line_ras"] = [ap[1].round(2).tolist(), ap[2].round(2).tolist()]
                t, v = canal.profile(sac, vol, c, canal.lateral_direction(disc.normal_ras, "right"), 40.0)
                run = canal.run_through(t, v)
                if run:
                    half_width = (run[1] - run[0]) / 2
                disc_mask, posterior = (np.asarray(walls[k].array, np.float32) if walls else _mask(arr, reg, k)
                                        for k in RECESS_WALLS)
                for side in SIDES:
                    found = canal.lateral_recess(disc_mask, posterior, sac, vol, c, disc.normal_ras, side,
                                                 min_extent_mm=cfg["lateral_recess_min_extent_mm"])
                    values[f"{side}.lateral_recess_depth_mm"] = None if found is None else found[0]
                    if found is not None:
                        marks[f"{side}.lateral_recess_line_ras"] = [found[1].round(2).tolist(),
                                                                    found[2].round(2).tolist()]
        for side in SIDES:
            values[f"{side}.foramen_area_mm2"] = canal.foramen_area_mm2(
                contents, sag, sag_axis, disc.center_ras, disc.normal_ras, side, half_width + 8.0)
        values["central_grade"] = central_grade(values.get("dsca_mm2"), cfg)
        for side in SIDES:
            values[f"{side}.lateral_recess_grade"] = recess_grade(values.get(f"{side}.lateral_recess_depth_mm"), cfg)
            values[f"{side}.foramen_grade"] = foramen_grade(values.get(f"{side}.foramen_area_mm2"), cfg)
        _roots(values, level, innervation)
        _store(res, level, values, reasons)
    return res


def _roots(values: dict[str, Any], level: str, innervation: dict[str, Any] | None) -> None:
    if not innervation or level not in innervation.get("spinal_levels", {}):
        return
    zone = innervation["spinal_levels"][level]
    central = set(zone["central"]) if values.get("central_grade") in ("relative", "absolute") else set()
    all_roots: set[str] = set(central)
    for side in SIDES:
        roots = set(central)
        if values.get(f"{side}.lateral_recess_grade") == "narrowed":
            roots |= set(zone["lateral_recess"])
        if (values.get(f"{side}.foramen_grade") or 0) >= 2:
            roots |= set(zone["foramen"])
        values[f"{side}.roots_at_risk"] = ",".join(sorted(roots, key=_root_key))
        all_roots |= roots
    values["roots_at_risk"] = ",".join(sorted(all_roots, key=_root_key))


def _root_key(root: str) -> tuple[int, int]:
    return (0 if root[0] == "L" else 1, int(root[1:]))


UNITS = {"dsca_mm2": "mm2", "ap_diameter_mm": "mm", "lateral_recess_depth_mm": "mm", "foramen_area_mm2": "mm2"}
GRADE_OF = {"dsca_mm2": "central_grade", "ap_diameter_mm": None, "lateral_recess_depth_mm": "lateral_recess_grade",
            "foramen_area_mm2": "foramen_grade"}


def _store(res: SpineMeasurements, level: str, values: dict[str, Any], reasons: dict[str, str]) -> None:
    s = res.summary
    keys = ["dsca_mm2", "ap_diameter_mm", "central_grade", "roots_at_risk"] + [
        f"{side}.{k}" for side in SIDES for k in ("lateral_recess_depth_mm", "lateral_recess_grade",
                                                  "foramen_area_mm2", "foramen_grade", "roots_at_risk")]
    for key in keys:
        v = values.get(key)
        full = f"spine.{level}.{key}"
        if v is None:
            if key.endswith("roots_at_risk"):
                s.set_null(full, "configs/innervation.yaml has no entry for this level")
                continue
            base = key.split(".")[-1]
            src = {"central_grade": "dsca_mm2", "lateral_recess_grade": "lateral_recess_depth_mm",
                   "foramen_grade": "foramen_area_mm2"}.get(base, base)
            side_prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            s.set_null(full, reasons.get(side_prefix + src, reasons.get(key, f"{src} not measurable at {level}")))
        else:
            s.set(full, round(v, 2) if isinstance(v, float) else v)
    for key, unit in UNITS.items():
        for side in (["central"] if key in ("dsca_mm2", "ap_diameter_mm") else list(SIDES)):
            vk = key if side == "central" else f"{side}.{key}"
            gk = GRADE_OF[key]
            grade = values.get(gk if side == "central" or gk is None else f"{side}.{gk}") if gk else None
            v = values.get(vk)
            res.rows.append({"level": level, "side": side, "metric": key, "value": None if v is None else round(v, 2),
                             "unit": unit, "grade": grade})
