"""Quality control of a lumbar segmentation from evidence that needs no ground truth.

As for the calf (:mod:`pipeline.calf.qc`), every spine segmentation carries a verdict (``pass``, ``review``,
``fail``) for the study and for each disc level, with the reasons; the rules never use a value whose QC failed
(:mod:`pipeline.rules.qc_gate`). The evidence, from the level-labelled sagittal map (thresholds in
``configs/qc.yaml``, section ``spine``):

* **is it a spine that was segmented**: at least ``min_discs`` discs and ``min_vertebral_bodies`` vertebral bodies,
  named or numbered (levels that cannot be named, with no sacrum in view, are numbered from the bottom of the field
  of view and measured under those numbers; the rules read named levels only);
* **a disc between two bodies**: each named disc's centre lies, along the body axis (world S), between the bodies
  it separates (L4-L5 between L5 and L4; L5-S1 between the sacrum and L5); an unnamed disc between some body below
  and some body above it;
* **a continuous dural sac**: the sac is labelled within ``sac_window_mm`` of each disc's centre;
* **the sac where the canal is**: on the sagittal line that measures the AP diameter (posterior from the disc's
  centre), the sac begins within ``max_disc_to_sac_mm`` of the disc's posterior margin (the anterior epidural space
  at a lumbar disc is a few millimetres at most); farther, or no sac on that line, the canal in front of it was
  not labelled as sac and its size is not measured there (the level fails);
* **plausible sizes**: dural sac area, AP diameter and foraminal area inside adult ranges (review only: stenosis and
  a capacious canal are real).
* **two views agree**: where a level is measured on an axial slice, the sac's AP diameter there and on the sagittal
  image (two images, two network passes) differ by at most ``max_view_ap_difference_mm``; more, and one of the two
  segmentations is wrong without telling which: the level fails;
* **the network's certainty of the sac**: the mean binary entropy of the sagittal dural-sac probability over the
  voxels it gives some belief (p > 0.05) within ``sac_window_mm`` of the disc plane (:func:`sac_entropy`); above
  ``sac_entropy_review`` the level is marked for review (where the network hesitates between sac and its
  neighbours, the canal measurements at that level rest on its guess).

A study whose every level failed fails. A study with axial stacks and no sagittal image is judged per disc by the
same sac, certainty and size checks on its axial slices (:func:`judge_axial_only`).

Pure: label arrays and values in, a :class:`SpineQC` out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.labels import Registry
from pipeline.core.verdict import FAIL, PASS, REVIEW, Verdict, join_reasons, worst
from pipeline.core.volume import Volume
from pipeline.spine import canal
from pipeline.spine.axial_only import AxialDisc
from pipeline.spine.levels import Disc, disc_label_name, levels_from_labels

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
        out: dict[str, Any] = {"spine.qc_status": self.status, "spine.qc_reasons": join_reasons(self.reasons)}
        for level, q in self.levels.items():
            out[f"spine.{level}.qc_status"] = q.status
            out[f"spine.{level}.qc_reasons"] = join_reasons(q.reasons)
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


def sac_entropy(sac_probability: Volume, disc: Disc, window_mm: float, min_p: float = 0.05) -> float | None:
    """Mean binary entropy (bits) of the dural-sac probability p over the voxels with p > ``min_p`` whose distance
    from the plane of ``disc`` (through its centre, along its normal) is under ``window_mm``:
    H = -(p log2 p + (1 - p) log2 (1 - p)), 0 where the network is certain, 1 at p = 0.5 (the voxel-wise
    uncertainty of Kendall & Gal, NeurIPS 2017, for one class against the rest). Voxels at the sac's edge are
    uncertain in any segmentation (partial volume), so the mean is not 0 even for a right one. None when no voxel
    qualifies.

    >>> from pipeline.core.volume import Volume
    >>> p = np.zeros((1, 1, 21)); p[0, 0, 5:16] = 1.0; p[0, 0, [5, 15]] = 0.5
    >>> d = Disc("L4-L5", np.zeros((1, 1, 21), bool), np.array([0.0, 0, 10]), np.array([0.0, 0, 1]))
    >>> round(sac_entropy(Volume(p, np.eye(4)), d, 6.0), 3)   # 9 certain voxels and 2 at p = 0.5
    0.182
    """
    prob = np.asarray(sac_probability.array, np.float32)
    idx = np.argwhere(prob > min_p)
    if not len(idx):
        return None
    along = (sac_probability.voxel_to_world(idx) - disc.center_ras) @ disc.normal_ras
    p = np.clip(prob[tuple(idx[np.abs(along) < window_mm].T)].astype(np.float64), 1e-9, 1 - 1e-9)
    if not p.size:
        return None
    return float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))


def judge_spine(labels: Volume, reg: Registry, cfg: dict[str, Any], level_flags: list[str],
                values: dict[str, Any], inferred: Collection[str] = (), sac_probability: Volume | None = None,
                ap_views: dict[str, tuple[float, float]] | None = None) -> SpineQC:
    """The QC verdict of a level-labelled sagittal map (``spine/labels_sag.nii.gz``); ``level_flags`` are the
    level labelling's flags (why levels are not named), ``values`` the summary values measured from it,
    ``inferred`` the discs placed in a gap between two bodies because the network did not label them (review),
    ``sac_probability`` the network's dural-sac probability on the sagittal grid (its certainty is judged when
    given), ``ap_views`` the sac's AP diameter on the axial slice and on the sagittal image per level
    (:attr:`pipeline.spine.measure.SpineMeasurements.ap_views`; their agreement is judged when given)."""
    centres = _z_centres(labels, reg)
    by_name = {lab.name: lab for lab in reg.labels}
    discs = sorted(by_name[n].level for n in centres if by_name[n].structure == "disc")
    bodies = [n for n in centres if by_name[n].structure in ("vertebral_body", "sacrum")]
    reasons: list[str] = []
    status = PASS
    n_bodies = sum(1 for n in bodies if by_name[n].structure == "vertebral_body")
    if len(discs) < cfg["min_discs"] or n_bodies < cfg["min_vertebral_bodies"]:
        why = "; ".join(level_flags) or "the network found too few of them"
        reasons.append(f"{len(discs)} disc(s) and {n_bodies} vertebral body(ies) found, fewer than "
                       f"{cfg['min_discs']} and {cfg['min_vertebral_bodies']}: no level is measured ({why})")
        status = FAIL
    levels: dict[str, LevelQC] = {}
    planes = levels_from_labels(labels, reg).discs
    for level in discs:
        q = levels.setdefault(level, LevelQC())
        if level in inferred:
            q.add(REVIEW, f"{level}: the network did not label this disc, which was placed in the gap between the "
                          "neighbouring vertebral bodies")
        z_disc = centres[disc_label_name(level)][0]
        if level in DISC_NEIGHBOURS:
            below, above = DISC_NEIGHBOURS[level]
            if below not in centres or above not in centres:
                q.add(REVIEW, f"{level}: the bodies on both sides of the disc are not both labelled")
            elif not centres[below][0] < z_disc < centres[above][0]:
                q.add(FAIL, f"{level}: the disc does not lie between {below} and {above}")
        elif not (any(centres[b][0] < z_disc for b in bodies) and any(centres[b][0] > z_disc for b in bodies)):
            q.add(REVIEW, f"{level}: no vertebral body on both sides of the disc")
        _judge_sac(q, level, labels, reg, z_disc, planes.get(level), sac_probability, cfg)
        if ap_views and level in ap_views:
            _views_agree(q, level, *ap_views[level], cfg["max_view_ap_difference_mm"])
        _plausible(q, level, values, cfg)
    return _with_levels(status, reasons, levels)


def _with_levels(status: str, reasons: list[str], levels: dict[str, LevelQC]) -> SpineQC:
    """The study's verdict from its own ``status`` and ``reasons`` and its levels': failed when every level
    failed, marked for review when some level failed or is marked for review."""
    failed = [lv for lv, q in levels.items() if q.status == FAIL]
    if failed:
        reasons.append(f"level(s) {', '.join(failed)} failed QC")
        status = worst(status, FAIL if len(failed) == len(levels) else REVIEW)
    if any(q.status == REVIEW for q in levels.values()):
        status = worst(status, REVIEW)
    reasons += [r for q in levels.values() for r in q.reasons]
    return SpineQC(status, reasons, levels)


def judge_axial_only(stacks: Sequence[Volume], discs: Sequence[AxialDisc], reg: Registry, cfg: dict[str, Any],
                     values: dict[str, Any], sac_probabilities: Sequence[Volume | None] = ()) -> SpineQC:
    """The QC verdict of a study measured on its axial stacks alone (:mod:`pipeline.spine.axial_only`):
    ``stacks`` are the stacks' label maps (discs named ``disc_1`` ...), ``discs`` the discs found on them,
    ``values`` the summary values measured, ``sac_probabilities`` each stack's dural-sac probability (judged when
    given). The study fails when no disc was found (nothing of a lumbar spine was measured). Per disc, as at a
    sagittal level: the sac labelled near the disc and beginning right behind it (on the axial slice's AP line),
    the network's certainty of the sac, plausible sizes; a disc cut by its stack's end is marked for review. With no
    second view to cross-check the axial one, concerns of ``axial_only_review_kinds_to_fail`` kinds (coverage, sac
    certainty, size) fail a disc."""
    if not discs:
        return SpineQC(FAIL, ["no intervertebral disc was found on the axial stack(s): the images are not of a "
                              "lumbar spine, or the segmentation failed; nothing is measured"], {})
    levels: dict[str, LevelQC] = {}
    for d in discs:
        q = levels.setdefault(d.level, LevelQC())
        if d.cut:
            q.add(REVIEW, f"{d.level}: the disc is widest on the first or last slice of its axial stack, so it may "
                          "be cut by the stack's end and the slice measured lie off its mid-plane", "coverage")
        probability = sac_probabilities[d.stack] if d.stack < len(sac_probabilities) else None
        _judge_sac(q, d.level, stacks[d.stack], reg, float(d.center_ras[2]), d.as_disc(stacks[d.stack]),
                   probability, cfg)
        _plausible(q, d.level, values, cfg)
        q.converge(int(cfg["axial_only_review_kinds_to_fail"]))
    return _with_levels(PASS, [], levels)


def _judge_sac(q: LevelQC, level: str, labels: Volume, reg: Registry, z_disc: float, plane: Disc | None,
               sac_probability: Volume | None, cfg: dict[str, Any]) -> None:
    """The dural sac at one disc: labelled near it (else fail), beginning right behind it (:func:`_sac_behind_disc`)
    and, with the network's probability given, labelled with certainty (:func:`sac_entropy`; else review)."""
    if not _sac_near(labels, reg, z_disc, cfg["sac_window_mm"]):
        q.add(FAIL, f"{level}: no dural sac within {cfg['sac_window_mm']:g} mm of the disc")
    elif plane is not None:
        _sac_behind_disc(q, level, labels, reg, plane, cfg["max_disc_to_sac_mm"])
    if sac_probability is not None and plane is not None:
        entropy = sac_entropy(sac_probability, plane, cfg["sac_window_mm"])
        if entropy is not None and entropy > cfg["sac_entropy_review"]:
            q.add(REVIEW, f"{level}: the network is unsure of the dural sac here (mean entropy {entropy:.2f} of its "
                          f"sac probability within {cfg['sac_window_mm']:g} mm of the disc, above "
                          f"{cfg['sac_entropy_review']:g})", "sac certainty")


def _views_agree(q: LevelQC, level: str, ap_axial_mm: float, ap_sagittal_mm: float, max_difference_mm: float
                 ) -> None:
    """Fail the level when the sac's AP diameter on the axial slice and on the sagittal image differ by more than
    ``max_difference_mm``.

    >>> q = LevelQC(); _views_agree(q, "L4-L5", 12.0, 8.7, 2.5); print(q.status, q.reasons[0])
    fail L4-L5: the dural sac is 12.0 mm deep (AP) on the axial slice and 8.7 mm on the sagittal image, 3.3 mm apart (more than 2.5 mm): one of the two segmentations is wrong
    """
    if abs(ap_axial_mm - ap_sagittal_mm) > max_difference_mm:
        q.add(FAIL, f"{level}: the dural sac is {ap_axial_mm:.1f} mm deep (AP) on the axial slice and "
                    f"{ap_sagittal_mm:.1f} mm on the sagittal image, {abs(ap_axial_mm - ap_sagittal_mm):.1f} mm apart "
                    f"(more than {max_difference_mm:g} mm): one of the two segmentations is wrong")


def _sac_behind_disc(q: LevelQC, level: str, labels: Volume, reg: Registry, disc: Disc, max_gap_mm: float) -> None:
    """Fail the level when, posterior from the disc's centre (the sagittal AP line), the dural sac begins more than
    ``max_gap_mm`` behind the disc's posterior margin or not at all within reach."""
    arr = np.asarray(labels.array)
    post = canal.posterior_direction(disc.normal_ras)
    t, d = canal.profile((arr == reg.label_id(disc_label_name(level))).astype(np.float32), labels, disc.center_ras,
                         post, SAC_SEARCH_MM)
    _, s = canal.profile((arr == reg.label_id("dural_sac")).astype(np.float32), labels, disc.center_ras, post,
                         SAC_SEARCH_MM)
    k = int(np.argmax(t >= 0))
    while k < len(t) and d[k] >= 0.5:  # the disc's run from its centre backwards
        k += 1
    margin = float(t[min(k, len(t) - 1)])
    hit = np.nonzero((s >= 0.5) & (t > margin))[0]
    if hit.size == 0:
        q.add(FAIL, f"{level}: no dural sac behind the disc within {SAC_SEARCH_MM:g} mm")
    elif float(t[hit[0]]) - margin > max_gap_mm:
        q.add(FAIL, f"{level}: the dural sac begins {float(t[hit[0]]) - margin:.1f} mm behind the disc (more than "
                    f"{max_gap_mm:g} mm): the canal in front of it is not labelled as sac")


#: how far behind a disc's centre (mm) the dural sac is looked for
SAC_SEARCH_MM = 60.0


def _plausible(q: LevelQC, level: str, values: dict[str, Any], cfg: dict[str, Any]) -> None:
    for key, (lo, hi) in (("dsca_mm2", cfg["dsca_range_mm2"]), ("ap_diameter_mm", cfg["ap_range_mm"]),
                          ("left.foramen_area_mm2", cfg["foramen_range_mm2"]),
                          ("right.foramen_area_mm2", cfg["foramen_range_mm2"])):
        v = values.get(f"spine.{level}.{key}")
        if v is not None and not lo <= v <= hi:
            q.add(REVIEW, f"{level}: {key} {v:g} outside the adult range {lo:g}-{hi:g}", "size")
