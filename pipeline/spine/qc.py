"""Quality control of a lumbar segmentation from evidence that needs no ground truth.

As for the calf (:mod:`pipeline.calf.qc`), every spine segmentation carries a verdict (``pass``, ``review``,
``fail``) for the study and for each disc level, with the reasons; the rules never use a value whose QC failed
(:mod:`pipeline.rules.qc_gate`). The evidence, from the level-labelled sagittal map (thresholds in
``configs/qc.yaml``, section ``spine``):

* **is it a lumbar spine that was segmented**: at least ``min_discs`` named discs and ``min_vertebral_bodies``
  vertebral bodies; when the levels could not be named (no sacrum in view) the study fails with that reason rather
  than report unnamed numbers under level names;
* **a disc between two bodies**: each named disc's centre lies, along the body axis (world S), between the bodies
  it separates (L4-L5 between L5 and L4; L5-S1 between the sacrum and L5);
* **a continuous dural sac**: the sac is labelled within ``sac_window_mm`` of each disc's centre;
* **plausible sizes**: dural sac area and AP diameter inside adult ranges (review only: stenosis and a capacious
  canal are real).

Pure: label arrays and values in, a :class:`SpineQC` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.labels import Registry
from pipeline.core.verdict import FAIL, PASS, REVIEW, Verdict, worst
from pipeline.core.volume import Volume

#: the bodies above and below each disc (caudal first)
DISC_NEIGHBOURS = {"L5-S1": ("sacrum_S1", "vertebral_body_L5"), "L4-L5": ("vertebral_body_L5", "vertebral_body_L4"),
                   "L3-L4": ("vertebral_body_L4", "vertebral_body_L3"),
                   "L2-L3": ("vertebral_body_L3", "vertebral_body_L2"),
                   "L1-L2": ("vertebral_body_L2", "vertebral_body_L1")}


#: the verdict of one disc level, with the reasons
LevelQC = Verdict


@dataclass
class SpineQC:
    """Verdict on a lumbar segmentation: study status and reasons, and per disc level."""

    status: str
    reasons: list[str]
    levels: dict[str, LevelQC]

    def as_summary(self) -> dict[str, Any]:
        """``spine.qc_status``, ``spine.qc_reasons`` and ``spine.<level>.qc_status`` / ``.qc_reasons``."""
        out: dict[str, Any] = {"spine.qc_status": self.status, "spine.qc_reasons": "; ".join(self.reasons)}
        for level, q in self.levels.items():
            out[f"spine.{level}.qc_status"] = q.status
            out[f"spine.{level}.qc_reasons"] = "; ".join(q.reasons)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": self.reasons,
                "levels": {lv: {"status": q.status, "reasons": q.reasons} for lv, q in self.levels.items()}}


def _z_centres(labels: Volume, reg: Registry) -> dict[str, tuple[float, int]]:
    """World S coordinate (mm) of the centroid and voxel count of every label present, by label name."""
    arr = np.asarray(labels.array)
    ids = np.unique(arr[arr > 0])
    out = {}
    by_id = reg.by_id()
    for i in ids:
        if int(i) not in by_id:
            continue
        pts = np.argwhere(arr == i)
        z = labels.voxel_to_world(pts)[:, 2]
        out[by_id[int(i)].name] = (float(z.mean()), len(pts))
    return out


def _sac_near(labels: Volume, reg: Registry, z_mm: float, window_mm: float) -> bool:
    """Whether the dural sac is labelled within ``window_mm`` of world height ``z_mm``."""
    arr = np.asarray(labels.array)
    pts = np.argwhere(arr == reg.label_id("dural_sac"))
    if not len(pts):
        return False
    z = labels.voxel_to_world(pts)[:, 2]
    return bool(np.any(np.abs(z - z_mm) <= window_mm))


def judge_spine(labels: Volume, reg: Registry, cfg: dict[str, Any], level_flags: list[str],
                values: dict[str, Any]) -> SpineQC:
    """The QC verdict of a level-labelled sagittal map (``spine/labels_sag.nii.gz``); ``level_flags`` are the
    level labelling's flags (why levels are not named), ``values`` the summary values measured from it."""
    centres = _z_centres(labels, reg)
    discs = sorted(n.removeprefix("disc_").replace("_", "-") for n in centres if n.startswith("disc_"))
    bodies = [n for n in centres if n.startswith("vertebral_body_")]
    reasons: list[str] = []
    status = PASS
    if len(discs) < cfg["min_discs"] or len(bodies) < cfg["min_vertebral_bodies"]:
        why = "; ".join(level_flags) or "the network found too few of them"
        reasons.append(f"{len(discs)} named disc(s) and {len(bodies)} named vertebral body(ies), fewer than "
                       f"{cfg['min_discs']} and {cfg['min_vertebral_bodies']}: no level is measured ({why})")
        status = FAIL
    levels: dict[str, LevelQC] = {}
    for level in discs:
        q = levels.setdefault(level, LevelQC())
        z_disc = centres[f"disc_{level.replace('-', '_')}"][0]
        below, above = DISC_NEIGHBOURS[level]
        if below not in centres or above not in centres:
            q.add(REVIEW, f"{level}: the bodies on both sides of the disc are not both labelled")
        elif not centres[below][0] < z_disc < centres[above][0]:
            q.add(FAIL, f"{level}: the disc does not lie between {below} and {above}")
        if not _sac_near(labels, reg, z_disc, cfg["sac_window_mm"]):
            q.add(FAIL, f"{level}: no dural sac within {cfg['sac_window_mm']:g} mm of the disc")
        _plausible(q, level, values, cfg)
    failed = [lv for lv, q in levels.items() if q.status == FAIL]
    if failed:
        reasons.append(f"level(s) {', '.join(failed)} failed QC")
        status = worst(status, REVIEW)
    if any(q.status == REVIEW for q in levels.values()):
        status = worst(status, REVIEW)
    reasons += [r for q in levels.values() for r in q.reasons]
    return SpineQC(status, reasons, levels)


def _plausible(q: LevelQC, level: str, values: dict[str, Any], cfg: dict[str, Any]) -> None:
    for key, (lo, hi) in (("dsca_mm2", cfg["dsca_range_mm2"]), ("ap_diameter_mm", cfg["ap_range_mm"])):
        v = values.get(f"spine.{level}.{key}")
        if v is not None and not lo <= v <= hi:
            q.add(REVIEW, f"{level}: {key} {v:g} outside the adult range {lo:g}-{hi:g}")
