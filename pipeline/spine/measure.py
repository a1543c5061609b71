"""Per-level lumbar canal measurements, grades and roots at risk -> tidy rows and the spine section of summary.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.geometry import SIDES
from pipeline.core.labels import Registry
from pipeline.core.summary import Summary
from pipeline.core.units import ucum
from pipeline.core.volume import Volume
from pipeline.spine import canal
from pipeline.spine.axial_only import AXIAL_ONLY_METHOD, AxialDisc
from pipeline.spine.levels import DISC_LEVELS, Disc, LevelResult

LEVEL_ORDER = tuple(reversed(DISC_LEVELS))  # L1-L2 ... L5-S1
#: the network classes whose probability maps bound the lateral recess (:attr:`AxialStack.walls`)
RECESS_WALLS = ("disc", "posterior_elements")


@dataclass
class SpineMeasurements:
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    #: per level, where each value was measured (world RAS mm), for the QA pictures: ``slice_point_ras`` (a point
    #: on the axial slice measured), ``ap_line_ras`` and ``<side>.lateral_recess_line_ras`` ([start, end])
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per level measured on an axial slice, the sac's AP diameter (mm) there and on the sagittal image: two views,
    #: two network passes, whose disagreement the spine QC judges (:func:`pipeline.spine.qc.judge_spine`)
    ap_views: dict[str, tuple[float, float]] = field(default_factory=dict)


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


RSNA_GRADES = ("normal_mild", "moderate", "severe")


def rsna_grade(value: float | None, severe_below: float, moderate_below: float) -> str | None:
    """A measurement in the three-step vocabulary of the RSNA 2024 Lumbar Spine Degenerative Classification
    (Normal/Mild, Moderate, Severe): ``severe`` below ``severe_below``, ``moderate`` below ``moderate_below``, else
    ``normal_mild`` (smaller is narrower for every measure graded here). The bounds and their sources are in
    ``configs/default.yaml`` (``spine.rsna``).

    >>> [rsna_grade(v, 75, 100) for v in (60.0, 80.0, 130.0, None)]
    ['severe', 'moderate', 'normal_mild', None]
    """
    if value is None:
        return None
    return "severe" if value < severe_below else "moderate" if value < moderate_below else "normal_mild"


def rsna_grades(values: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Add ``canal_rsna``, ``<side>.subarticular_rsna`` and ``<side>.foraminal_rsna`` to a level's ``values``:
    canal from the dural sac area, subarticular from the lateral recess depth, foraminal from the foraminal area."""
    r = cfg["rsna"]
    values["canal_rsna"] = rsna_grade(values.get("dsca_mm2"), *r["canal_dsca_mm2"])
    for side in SIDES:
        values[f"{side}.subarticular_rsna"] = rsna_grade(values.get(f"{side}.lateral_recess_depth_mm"),
                                                         *r["subarticular_recess_depth_mm"])
        values[f"{side}.foraminal_rsna"] = rsna_grade(values.get(f"{side}.foramen_area_mm2"),
                                                      *r["foraminal_area_mm2"])


def _mask(arr: np.ndarray, reg: Registry, *names: str) -> np.ndarray:
    ids = [lab.id for lab in reg.labels if lab.structure in names]
    return np.isin(arr, ids)


@dataclass
class AxialStack:
    """One axial T2 stack: its level-named label map and, where the segmentation kept them, the dural sac
    probability (AP diameter read where it crosses 0.5) and the ``disc`` / ``posterior_elements`` probabilities
    (the lateral recess measured between their 0.5 levels), all on the grid of the label map."""

    labels: Volume
    sac: Volume | None = None
    walls: dict[str, Volume] | None = None

    def __post_init__(self) -> None:
        probs = [self.sac, *((self.walls or {}).get(k) for k in RECESS_WALLS)]
        if any(p is not None and not p.same_grid(self.labels) for p in probs):
            raise ValueError("a probability map is not on the grid of its label map")
        self.axis = canal.acquisition_axis(self.labels)
        self.array = np.asarray(self.labels.array)

    def sac_wall(self, sac_mask: np.ndarray) -> np.ndarray:
        """What the AP diameter reads the sac's walls from: the probability map when kept, else the label mask."""
        return sac_mask if self.sac is None else np.asarray(self.sac.array, np.float32)

    def recess_walls(self, reg: Registry) -> tuple[np.ndarray, np.ndarray]:
        """(disc, posterior elements) as probability maps when kept, else as label masks."""
        disc, posterior = (np.asarray(self.walls[k].array, np.float32) if self.walls else _mask(self.array, reg, k)
                           for k in RECESS_WALLS)
        return disc, posterior


@dataclass
class _Sagittal:
    """What every level reads from the sagittal label map (and its sac probability)."""

    labels: Volume
    axis: int
    sac_wall: np.ndarray
    wall_level: float
    contents: np.ndarray


def _sagittal(levels: LevelResult, reg: Registry, cfg: dict[str, Any], sac_sag: Volume | None) -> _Sagittal:
    sag = levels.labels
    if sac_sag is not None and not sac_sag.same_grid(sag):
        raise ValueError("a probability map is not on the grid of its label map")
    arr = np.asarray(sag.array)
    wall = _mask(arr, reg, "dural_sac") if sac_sag is None else np.asarray(sac_sag.array, np.float32)
    level = 0.5 if sac_sag is None else float(cfg["sagittal_ap_wall_level"])
    return _Sagittal(sag, canal.acquisition_axis(sag), wall, level, _mask(arr, reg, "epidural_fat", "nerve_root"))


def measure_levels(levels: LevelResult, axials: Sequence[AxialStack], reg: Registry, cfg: dict[str, Any],
                   innervation: dict[str, Any] | None, sac_sag: Volume | None = None) -> SpineMeasurements:
    """Measure every disc level L1-L2 .. L5-S1 found in ``levels``, and every unnamed disc (``disc_1`` ...,
    numbered from the bottom of the field of view when the levels could not be named); the values of a named level
    that was not found are null with the reason. Unnamed discs have no roots at risk (null: the level is not named).

    ``sac_sag`` (optional, on the grid of ``levels.labels``) is the dural sac probability of the sagittal image:
    where given, the sagittal-only AP diameter is read where it crosses ``cfg["sagittal_ap_wall_level"]`` instead
    of at the border of the label map. Each :class:`AxialStack` may carry its own probability maps likewise.
    """
    res = SpineMeasurements()
    s = res.summary
    s.set("spine.available", True)
    s.set("spine.levels_method", levels.method)
    s.set("spine.levels_confidence", round(levels.confidence, 2))
    s.set("spine.levels_named", any(lv in levels.discs for lv in LEVEL_ORDER))
    if levels.flags:
        s.set("spine.levels_flags", "; ".join(levels.flags))
    sag = _sagittal(levels, reg, cfg, sac_sag)
    reach = canal.Reach.from_config(cfg)
    unnamed = sorted((lv for lv in levels.discs if lv not in LEVEL_ORDER), key=lambda lv: int(lv.split("_")[-1]))
    for level in (*LEVEL_ORDER, *unnamed):
        disc = levels.discs.get(level)
        if disc is None:
            _null_level(s, level, "; ".join(levels.flags) or f"disc {level} not found")
            continue
        values, reasons = _measure_level(res, level, disc, sag, axials, reg, cfg, reach)
        _grade_and_store(res, level, values, reasons, cfg, innervation, named=level not in unnamed)
    return res


def measure_axial_only(discs: Sequence[AxialDisc], axials: Sequence[AxialStack], reg: Registry,
                       cfg: dict[str, Any], flags: Sequence[str]) -> SpineMeasurements:
    """Measure the discs of a study without a sagittal image (:func:`pipeline.spine.axial_only.find_axial_discs`),
    each on the slice of its own stack nearest its centre: dural sac area, AP diameter and lateral recesses as at a
    level with an axial slice. The foramina, measured on sagittal slices, are null with the reason; every named level
    is null (no level can be named), and so are the roots at risk."""
    res = SpineMeasurements()
    s = res.summary
    s.set("spine.available", True)
    s.set("spine.levels_method", AXIAL_ONLY_METHOD)
    s.set("spine.levels_confidence", 0.0)
    s.set("spine.levels_named", False)
    s.set("spine.levels_flags", "; ".join(flags))
    for level in LEVEL_ORDER:
        _null_level(s, level, "no sagittal image: the levels cannot be counted, so no disc is named")
    reach = canal.Reach.from_config(cfg)
    for d in discs:
        stack = axials[d.stack]
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        pick = canal.nearest_slice(stack.labels, stack.axis, d.center_ras, d.normal_ras, cfg["max_disc_distance_mm"])
        if pick is None:
            reasons["dsca_mm2"] = f"no axial slice within {cfg['max_disc_distance_mm']} mm of the {d.level} centre"
        else:
            _measure_axial(res, d.level, d.as_disc(stack.labels), stack, pick, reg, cfg, reach, values, reasons)
        for side in SIDES:
            values[f"{side}.foramen_area_mm2"] = None
            reasons[f"{side}.foramen_area_mm2"] = "the foramina are measured on sagittal slices; the study has none"
        _grade_and_store(res, d.level, values, reasons, cfg, None, named=False)
    return res


def _grade_and_store(res: SpineMeasurements, level: str, values: dict[str, Any], reasons: dict[str, str],
                     cfg: dict[str, Any], innervation: dict[str, Any] | None, named: bool) -> None:
    """Grade one level's values, add its roots at risk (from ``innervation``; none for a level that is not
    ``named``, whose roots are not known) and store it in ``res``."""
    values["central_grade"] = central_grade(values.get("dsca_mm2"), cfg)
    for side in SIDES:
        values[f"{side}.lateral_recess_grade"] = recess_grade(values.get(f"{side}.lateral_recess_depth_mm"), cfg)
        values[f"{side}.foramen_grade"] = foramen_grade(values.get(f"{side}.foramen_area_mm2"), cfg)
    rsna_grades(values, cfg)
    if not named:
        reasons["roots_at_risk"] = "the level is not named, so its roots are not known"
    else:
        _roots(values, level, innervation)
    _store(res, level, values, reasons)


def _null_level(s: Summary, level: str, reason: str) -> None:
    for key in ("dsca_mm2", "ap_diameter_mm", "central_grade", "canal_rsna"):
        s.set_null(f"spine.{level}.{key}", reason)
    for side in SIDES:
        for key in ("lateral_recess_depth_mm", "lateral_recess_grade", "foramen_area_mm2", "foramen_grade",
                    "subarticular_rsna", "foraminal_rsna"):
            s.set_null(f"spine.{level}.{side}.{key}", reason)


def _nearest_stack(axials: Sequence[AxialStack], disc: Disc, cfg: dict[str, Any]
                   ) -> tuple[AxialStack, canal.SlicePick] | None:
    """The axial stack and slice nearest to the disc's mid-plane (within ``max_disc_distance_mm``)."""
    pick = None
    for stack in axials:
        p = canal.nearest_slice(stack.labels, stack.axis, disc.center_ras, disc.normal_ras, cfg["max_disc_distance_mm"])
        if p is not None and (pick is None or p.distance_mm < pick[1].distance_mm):
            pick = (stack, p)
    return pick


def _measure_level(res: SpineMeasurements, level: str, disc: Disc, sag: _Sagittal, axials: Sequence[AxialStack],
                   reg: Registry, cfg: dict[str, Any], reach: canal.Reach) -> tuple[dict[str, Any], dict[str, str]]:
    """The canal values of one level (axial slice when one is near the disc, else the sagittal image) and the
    reasons of the values that could not be measured."""
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    pick = _nearest_stack(axials, disc, cfg)
    half_width: float | None = None
    ap = canal.ap_line(sag.sac_wall, sag.labels, disc.center_ras, disc.normal_ras, reach, cfg["ap_bridge_gap_mm"],
                       behind=True, level=sag.wall_level)
    if pick is None:
        no_ax = f"no axial slice within {cfg['max_disc_distance_mm']} mm of the {level} disc plane"
        reasons["dsca_mm2"] = no_ax
        for side in SIDES:
            reasons[f"{side}.lateral_recess_depth_mm"] = no_ax
        if ap is not None:
            values["ap_diameter_mm"] = ap[0]
    else:
        half_width = _measure_axial(res, level, disc, *pick, reg, cfg, reach, values, reasons)
        if ap is not None and values.get("ap_diameter_mm") is not None:
            res.ap_views[level] = (float(values["ap_diameter_mm"]), float(ap[0]))
    if half_width is None:
        half_width = float(cfg["sac_half_width_mm"])
    start = half_width + float(cfg["foramen_beyond_sac_mm"])
    for side in SIDES:
        unseen = canal.foramen_out_of_view(sag.labels, sag.axis, disc.center_ras, side, start)
        if unseen is not None:
            values[f"{side}.foramen_area_mm2"] = None
            reasons[f"{side}.foramen_area_mm2"] = unseen
            continue
        area = canal.foramen_area_mm2(sag.contents, sag.labels, sag.axis, disc.center_ras, disc.normal_ras, side,
                                      start, reach)
        values[f"{side}.foramen_area_mm2"], why = plausible_foramen_area(area, float(cfg["foramen_min_area_mm2"]))
        if why:
            reasons[f"{side}.foramen_area_mm2"] = why
    return values, reasons


def plausible_foramen_area(area_mm2: float | None, min_area_mm2: float) -> tuple[float | None, str | None]:
    """The foraminal area, or None with the reason when the region found is smaller than any foramen can be: a
    foramen holds its nerve root, so a region of a few mm2 is a fragment at the edge of the segmentation or of the
    field of view, not a foramen narrowed to that size (graded, it would read as severe narrowing).

    >>> plausible_foramen_area(72.0, 12.0), plausible_foramen_area(None, 12.0)
    ((72.0, None), (None, None))
    >>> plausible_foramen_area(3.0, 12.0)[1]
    'the foraminal region found (3 mm2) is smaller than a foramen holding its nerve root can be (12 mm2): not a foramen'
    """
    if area_mm2 is None or area_mm2 >= min_area_mm2:
        return area_mm2, None
    return None, (f"the foraminal region found ({area_mm2:g} mm2) is smaller than a foramen holding its nerve root "
                  f"can be ({min_area_mm2:g} mm2): not a foramen")


def _measure_axial(res: SpineMeasurements, level: str, disc: Disc, stack: AxialStack, p: canal.SlicePick,
                   reg: Registry, cfg: dict[str, Any], reach: canal.Reach, values: dict[str, Any],
                   reasons: dict[str, str]) -> float | None:
    """DSCA, AP diameter and lateral recesses on the axial slice ``p`` of ``stack`` into ``values`` (and where
    they were measured into ``res.marks``); returns the half width of the sac (mm) when found."""
    vol = stack.labels
    sac = canal.canal_sac(_mask(stack.array, reg, "dural_sac"), vol, stack.axis, p.k, disc.center_ras,
                          disc.normal_ras, reach.ap_sagittal)
    c = canal.sac_centroid(sac, vol, stack.axis, p.k)
    if c is None:  # nothing to measure: null with the reason, not an area of 0
        for key in ("dsca_mm2", "ap_diameter_mm", *(f"{side}.lateral_recess_depth_mm" for side in SIDES)):
            reasons[key] = f"no dural sac on the axial slice through {level}"
        return None
    values["dsca_mm2"] = canal.dsca_mm2(sac, vol, stack.axis, p)
    marks = res.marks.setdefault(level, {"slice_point_ras": c.round(2).tolist()})
    ap = canal.ap_line(stack.sac_wall(sac), vol, c, disc.normal_ras, reach, bridge_mm=cfg["ap_bridge_gap_mm"])
    values["ap_diameter_mm"] = None if ap is None else ap[0]
    if ap is not None:
        marks["ap_line_ras"] = [ap[1].round(2).tolist(), ap[2].round(2).tolist()]
    t, v = canal.profile(sac, vol, c, canal.lateral_direction(disc.normal_ras, "right"), reach.sac_lateral)
    run = canal.run_through(t, v)
    disc_mask, posterior = stack.recess_walls(reg)
    for side in SIDES:
        found = canal.lateral_recess(disc_mask, posterior, sac, vol, c, disc.normal_ras, side, reach,
                                     min_extent_mm=cfg["lateral_recess_min_extent_mm"])
        values[f"{side}.lateral_recess_depth_mm"] = None if found is None else found[0]
        if found is not None:
            marks[f"{side}.lateral_recess_line_ras"] = [found[1].round(2).tolist(), found[2].round(2).tolist()]
    return (run[1] - run[0]) / 2 if run else None


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


#: the canal measurements of ``spine/measurements.csv``, each with its grade and RSNA grade below
METRICS = ("dsca_mm2", "ap_diameter_mm", "lateral_recess_depth_mm", "foramen_area_mm2")
GRADE_OF = {"dsca_mm2": "central_grade", "ap_diameter_mm": None, "lateral_recess_depth_mm": "lateral_recess_grade",
            "foramen_area_mm2": "foramen_grade"}
RSNA_OF = {"dsca_mm2": "canal_rsna", "ap_diameter_mm": None, "lateral_recess_depth_mm": "subarticular_rsna",
           "foramen_area_mm2": "foraminal_rsna"}


def _store(res: SpineMeasurements, level: str, values: dict[str, Any], reasons: dict[str, str]) -> None:
    s = res.summary
    keys = ["dsca_mm2", "ap_diameter_mm", "central_grade", "canal_rsna", "roots_at_risk"] + [
        f"{side}.{k}" for side in SIDES for k in ("lateral_recess_depth_mm", "lateral_recess_grade",
                                                  "subarticular_rsna", "foramen_area_mm2", "foramen_grade",
                                                  "foraminal_rsna", "roots_at_risk")]
    for key in keys:
        v = values.get(key)
        full = f"spine.{level}.{key}"
        if v is None:
            if key.endswith("roots_at_risk"):
                s.set_null(full, reasons.get("roots_at_risk", "configs/innervation.yaml has no entry for this level"))
                continue
            base = key.split(".")[-1]
            src = {"central_grade": "dsca_mm2", "lateral_recess_grade": "lateral_recess_depth_mm",
                   "foramen_grade": "foramen_area_mm2", "canal_rsna": "dsca_mm2",
                   "subarticular_rsna": "lateral_recess_depth_mm", "foraminal_rsna": "foramen_area_mm2"}.get(base, base)
            side_prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            s.set_null(full, reasons.get(side_prefix + src, reasons.get(key, f"{src} not measurable at {level}")))
        else:
            s.set(full, round(v, 2) if isinstance(v, float) else v)
    for key in METRICS:
        unit = ucum(key)
        for side in (["central"] if key in ("dsca_mm2", "ap_diameter_mm") else list(SIDES)):
            vk = key if side == "central" else f"{side}.{key}"
            gk = GRADE_OF[key]
            grade = values.get(gk if side == "central" or gk is None else f"{side}.{gk}") if gk else None
            v = values.get(vk)
            rk = RSNA_OF[key]
            rsna = values.get(rk if side == "central" or rk is None else f"{side}.{rk}") if rk else None
            res.rows.append({"level": level, "side": side, "metric": key, "value": None if v is None else round(v, 2),
                             "unit": unit, "grade": grade, "grade_rsna": rsna})
