"""Quality control of a calf segmentation from evidence that needs no ground truth.

A confident wrong number is the worst output this product can give, so every calf segmentation carries a verdict
(``pass``, ``review``, ``fail``) per structure and leg and for the study, with the reasons. The evidence
(thresholds in ``configs/qc.yaml``):

* **is it a calf** - every required structure present in a leg (both bones, the gastrocnemius heads, soleus,
  tibialis anterior and posterior, peroneus), enough slices, a leg cross-section no wider than an adult calf;
* **anatomical relations** (Gray's Anatomy, leg chapter), per slice that holds both structures: medial
  gastrocnemius medial to the lateral head, gastrocnemii posterior to soleus, tibialis posterior anterior to
  (deep to) soleus, tibialis anterior anterior to soleus and tibialis posterior, fibula and peroneus lateral to the
  tibia. Medial/lateral come from world x and the leg's side: lateral is +x (RAS) in a right leg, -x in a left;
* **connected components** - the largest 3-D piece of a structure should hold nearly all of it;
* **the network's own certainty** - test-time flip agreement and the mean normalised entropy of its class
  probabilities inside the structure, when the segment stage measured them;
* **volume ratios** of healthy calves (soleus the largest muscle, medial gastrocnemius larger than lateral) and
  left/right asymmetry - review only, since disease changes them.

Pure: label arrays and records in, a :class:`CalfQC` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import measure

from pipeline.calf.metrics import find_boxes
from pipeline.core.geometry import SIDES
from pipeline.core.labels import Registry
from pipeline.core.verdict import FAIL, PASS, REVIEW, Verdict, join_reasons, worst
from pipeline.core.volume import Volume

#: (a, b, axis, sign): structure ``a`` lies on the ``sign`` side of ``b`` along ``axis`` ("lateral": leg-relative
#: world x; "anterior": world y), with the name used in messages.
RELATIONS: tuple[tuple[str, str, str, int, str], ...] = (
    ("gastrocnemius_medial", "gastrocnemius_lateral", "lateral", -1, "medial gastrocnemius medial to the lateral head"),
    ("gastrocnemius_medial", "soleus", "anterior", -1, "medial gastrocnemius posterior to soleus"),
    ("gastrocnemius_lateral", "soleus", "anterior", -1, "lateral gastrocnemius posterior to soleus"),
    ("tibialis_posterior", "soleus", "anterior", 1, "tibialis posterior deep to (anterior of) soleus"),
    ("tibialis_anterior", "soleus", "anterior", 1, "tibialis anterior anterior to soleus"),
    ("tibialis_anterior", "tibialis_posterior", "anterior", 1, "tibialis anterior anterior to tibialis posterior"),
    ("fibula", "tibia", "lateral", 1, "fibula lateral to the tibia"),
    ("peroneus", "tibia", "lateral", 1, "peroneus lateral to the tibia"),
)


#: the verdict of one structure in one leg, with the reasons
StructureQC = Verdict


@dataclass
class CalfQC:
    """Verdict on a calf segmentation: study status and reasons, per side and structure, and the measured evidence
    (``checks``: name, side, value, status) for the report."""

    status: str
    reasons: list[str]
    structures: dict[str, dict[str, StructureQC]]
    checks: list[dict[str, Any]]

    def add_study_reason(self, status: str, reason: str) -> None:
        """A finding about the whole study from outside the segmentation (e.g. its inputs), with its status."""
        self.status = worst(self.status, status)
        self.reasons.append(reason)

    def structure_status(self, side: str, structure: str) -> str:
        """Status of a structure in a leg; a structure that was never judged takes the study's status."""
        s = self.structures.get(side, {}).get(structure)
        return s.status if s is not None else self.status

    def as_summary(self) -> dict[str, Any]:
        """Flat ``summary.json`` values: ``calf.qc_status``, ``calf.qc_reasons`` and
        ``calf.<side>.<structure>.qc_status`` / ``.qc_reasons`` (reasons joined by "; ", empty when none)."""
        out: dict[str, Any] = {"calf.qc_status": self.status, "calf.qc_reasons": join_reasons(self.reasons)}
        for side, structs in self.structures.items():
            for name, s in structs.items():
                out[f"calf.{side}.{name}.qc_status"] = s.status
                out[f"calf.{side}.{name}.qc_reasons"] = join_reasons(s.reasons)
        return out


@dataclass
class SliceStats:
    """Per label id and axial slice: voxel count and world centroid (x, y) in mm."""

    count: np.ndarray  # (n_ids, nz)
    x_mm: np.ndarray
    y_mm: np.ndarray
    pixel_area_mm2: float


def slice_stats(labels: Volume, n_ids: int) -> SliceStats:
    """Counts and world (RAS) centroids of every label id on every slice of the last array axis, in one pass.

    >>> import numpy as np
    >>> from pipeline.core.volume import Volume
    >>> a = np.zeros((4, 4, 2), np.int16); a[0, 0, 0] = 1; a[2, 0, 0] = 1
    >>> s = slice_stats(Volume(a, np.diag([2.0, 2.0, 5.0, 1.0])), 2)
    >>> int(s.count[1, 0]), float(s.x_mm[1, 0]), bool(np.isnan(s.x_mm[1, 1]))
    (2, 2.0, True)
    """
    arr = np.asarray(labels.array)
    nz = arr.shape[2]
    idx = np.flatnonzero(arr)
    lab = arr.ravel()[idx].astype(np.int64)
    i, j, k = np.unravel_index(idx, arr.shape)
    a = labels.affine
    x = a[0, 0] * i + a[0, 1] * j + a[0, 2] * k + a[0, 3]
    y = a[1, 0] * i + a[1, 1] * j + a[1, 2] * k + a[1, 3]
    key = lab * nz + k
    n = n_ids * nz
    count = np.bincount(key, minlength=n).reshape(n_ids, nz)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(key, weights=x, minlength=n).reshape(n_ids, nz) / count
        cy = np.bincount(key, weights=y, minlength=n).reshape(n_ids, nz) / count
    sp = labels.spacing_mm
    return SliceStats(count, cx, cy, float(sp[0] * sp[1]))


def relation_fraction(stats: SliceStats, id_a: int, id_b: int, axis: str, sign: int, lateral_sign: float,
                      min_csa_mm2: float) -> tuple[float, int]:
    """Fraction of the slices holding both labels (each at least ``min_csa_mm2``) on which ``a`` lies on the
    ``sign`` side of ``b``; and the number of such slices.

    ``axis`` "lateral" compares ``lateral_sign * x`` (+1 right leg, -1 left leg), "anterior" compares world y.
    """
    min_px = min_csa_mm2 / stats.pixel_area_mm2
    both = (stats.count[id_a] >= min_px) & (stats.count[id_b] >= min_px)
    if not both.any():
        return float("nan"), 0
    if axis == "lateral":
        d = lateral_sign * (stats.x_mm[id_a] - stats.x_mm[id_b])
    else:
        d = stats.y_mm[id_a] - stats.y_mm[id_b]
    return float(np.mean(sign * d[both] > 0)), int(both.sum())


def largest_component_fraction(mask: np.ndarray) -> float:
    """Share of ``mask``'s voxels in its largest 6-connected component (1.0 for one piece, nan when empty).

    >>> import numpy as np
    >>> m = np.zeros((5, 5, 1), bool); m[0, :3, 0] = True; m[4, 4, 0] = True
    >>> largest_component_fraction(m)
    0.75
    """
    lab, n = ndimage.label(mask)
    if n == 0:
        return float("nan")
    sizes = np.bincount(lab.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def largest_component_fractions(arr: np.ndarray, boxes: list, ids: list[int]) -> dict[int, float]:
    """:func:`largest_component_fraction` of ``arr == i`` for every id ``i`` of ``ids`` present (``boxes``:
    ``scipy.ndimage.find_objects`` of ``arr``), from one labelling of the 6-connected regions of equal value inside
    the ids' joint bounding box: a component of ``arr == i`` is a region of value ``i`` in any box that holds it.

    >>> a = np.zeros((5, 5, 1), np.int16); a[0, :3, 0] = 2; a[4, 4, 0] = 2; a[2, :, 0] = 3
    >>> largest_component_fractions(a, ndimage.find_objects(a), [2, 3])
    {2: 0.75, 3: 1.0}
    """
    present = [i for i in ids if 0 < i <= len(boxes) and boxes[i - 1] is not None]
    if not present:
        return {}
    box = tuple(slice(min(boxes[i - 1][a].start for i in present), max(boxes[i - 1][a].stop for i in present))
                for a in range(arr.ndim))
    crop = arr[box]
    regions = measure.label(crop, connectivity=1, background=0)
    sizes = np.bincount(regions.ravel())
    value = np.zeros(sizes.size, crop.dtype)
    value[regions] = crop
    out = {}
    for i in present:
        s = sizes[1:][value[1:] == i]
        out[i] = float(s.max() / s.sum())
    return out


def judge_calf(labels: Volume, reg: Registry, cfg: dict[str, Any],
               certainty: dict[str, dict[str, dict[str, float]]] | None = None) -> CalfQC:
    """The verdict on sided label map ``labels`` (``configs/qc.yaml`` section ``calf`` as ``cfg``).

    ``certainty`` (optional, from the segment stage): side -> structure -> {"flip_dice": .., "entropy": ..}, or
    ``"mirrored_entropy"`` in place of ``"entropy"`` for a bundle that averages over mirror images (judged against
    ``mirrored_entropy_review`` / ``mirrored_entropy_fail``).
    """
    n_ids = max(reg.by_id()) + 1
    stats = slice_stats(labels, n_ids)
    voxel_ml = labels.voxel_volume_mm3 / 1000.0
    structures: dict[str, dict[str, StructureQC]] = {}
    checks: list[dict[str, Any]] = []
    reasons: list[str] = []
    arr = np.asarray(labels.array)
    sides_found = [s for s in SIDES if any(stats.count[reg.sided_id(n, s)].sum() > 0 for n in reg.classes[1:])]
    if not sides_found:
        return CalfQC(FAIL, ["no calf structure was segmented: the image is empty, is not a calf, or the "
                             "segmentation failed"], {}, [])
    boxes = find_boxes(arr if arr.dtype.kind in "iu" else arr.astype(np.int32))
    for side in sides_found:
        structures[side] = _judge_leg(side, stats, (arr, boxes), reg, cfg, voxel_ml, checks, reasons,
                                      (certainty or {}).get(side, {}))
    _judge_asymmetry(structures, stats, reg, cfg, voxel_ml, checks)
    for structs in structures.values():
        for verdict in structs.values():
            verdict.converge(int(cfg["review_kinds_to_fail"]))
    return CalfQC(_study_status(structures, reasons, cfg), reasons, structures, checks)


def _study_status(structures: dict[str, dict[str, StructureQC]], reasons: list[str], cfg: dict[str, Any]) -> str:
    """Fail when a leg is not a calf, lost ``study_fail_structures`` required structures to QC, or has
    ``study_fail_doubted_structures`` required structures that are not a pass (marked for review or failed: doubts
    about many structures of one leg say that the leg's segmentation as a whole is not to be trusted, and the passes
    among them are no safer); review when any structure is not a pass (its failed values are left out of the
    rules); else pass. ``reasons`` holds, on entry, only the leg-level failures (no calf, too little coverage, too
    wide); the per-structure summaries are added here."""
    status = FAIL if reasons else PASS
    for side, structs in structures.items():
        failed = [n for n in cfg["required"] if structs[n].status == FAIL]
        doubted = [n for n in cfg["required"] if structs[n].status != PASS]
        if len(failed) >= cfg["study_fail_structures"]:
            status = FAIL
            reasons.append(f"{side} leg: {len(failed)} of the structures every calf holds failed QC "
                           f"({', '.join(failed)}): the segmentation is not to be trusted")
        elif len(doubted) >= cfg["study_fail_doubted_structures"]:
            status = FAIL
            reasons.append(f"{side} leg: {len(doubted)} of the structures every calf holds are in doubt "
                           f"({', '.join(doubted)}): the segmentation of the leg is not to be trusted")
        bad = [n for n, s in structs.items() if s.status != PASS]
        if bad and status == PASS:
            status = REVIEW
        if bad:
            reasons.append(f"{side} leg: " + ", ".join(f"{n} {structs[n].status}" for n in bad))
    return status


def _judge_leg(side: str, stats: SliceStats, arr_boxes: tuple[np.ndarray, list], reg: Registry, cfg: dict[str, Any], voxel_ml: float,
               checks: list[dict[str, Any]], reasons: list[str], certainty: dict[str, dict[str, float]]
               ) -> dict[str, StructureQC]:
    arr, boxes = arr_boxes
    out = {name: StructureQC() for name in reg.classes[1:]}
    ids = {name: reg.sided_id(name, side) for name in reg.classes[1:]}
    vol = {name: float(stats.count[i].sum()) * voxel_ml for name, i in ids.items()}
    _judge_extent(side, stats, ids, reg, cfg, out, checks, reasons)
    missing = [n for n in cfg["required"] if vol[n] < cfg["min_structure_ml"]]
    for n in missing:
        out[n].add(FAIL, f"not found (under {cfg['min_structure_ml']} ml)")
    if len(missing) >= cfg["study_fail_structures"]:
        reasons.append(f"{side} leg: {len(missing)} structures every calf holds were not found ({', '.join(missing)}): "
                       "not a calf, or the segmentation failed")
    lateral_sign = 1.0 if side == "right" else -1.0
    for a, b, axis, sign, text in RELATIONS:
        frac, n = relation_fraction(stats, ids[a], ids[b], axis, sign, lateral_sign, cfg["relation_min_csa_mm2"])
        if n == 0:
            continue
        status = FAIL if frac < cfg["relation_fail_fraction"] else REVIEW if frac < cfg["relation_review_fraction"] \
            else PASS
        checks.append({"check": f"relation: {text}", "side": side, "value": round(frac, 3), "slices": n,
                       "status": status})
        for name in (a, b):
            out[name].add(status, f"{text} on only {frac:.0%} of {n} slices", "anatomical relation")
    fractions = largest_component_fractions(arr, boxes, [i for name, i in ids.items()
                                                        if vol[name] >= cfg["min_structure_ml"]])
    for name, i in ids.items():
        if vol[name] < cfg["min_structure_ml"]:
            continue
        frac = fractions.get(i, float("nan"))
        status = FAIL if frac < cfg["component_fail_fraction"] else REVIEW if frac < cfg["component_review_fraction"] \
            else PASS
        if status != PASS:
            checks.append({"check": "largest_component_fraction", "side": side, "structure": name,
                           "value": round(frac, 3), "status": status})
        out[name].add(status, f"in pieces: the largest holds {frac:.0%}", "connected components")
        _judge_certainty(out[name], certainty.get(name, {}), cfg)
    _judge_ratios(out, vol, cfg, side, checks)
    if cfg["soleus_largest"]:
        _judge_soleus_level(out, stats, ids, side, checks)
    return out


def _judge_extent(side: str, stats: SliceStats, ids: dict[str, int], reg: Registry, cfg: dict[str, Any],
                  out: dict[str, StructureQC], checks: list[dict[str, Any]], reasons: list[str]) -> None:
    """Coverage (slices holding muscle) and the width of the leg's cross-section (a calf, not a thigh)."""
    muscle_ids = [ids[m] for m in reg.muscles]
    slices = int((stats.count[muscle_ids].sum(axis=0) > 0).sum())
    checks.append({"check": "slices_with_muscle", "side": side, "value": slices, "status":
                   FAIL if slices < cfg["min_slices"] else PASS})
    if slices < cfg["min_slices"]:
        reasons.append(f"{side} leg: muscle on {slices} slices, fewer than {cfg['min_slices']}: too little coverage "
                       "to measure")
        for s in out.values():
            s.add(FAIL, "too few slices")
    leg_px = stats.count[list(ids.values())].sum(axis=0)
    held = leg_px[leg_px > 0]
    leg_cm2 = float(np.median(held)) * stats.pixel_area_mm2 / 100.0 if held.size else 0.0
    wide = leg_cm2 > cfg["max_leg_area_cm2"]
    checks.append({"check": "median_leg_area_cm2", "side": side, "value": round(leg_cm2, 1),
                   "status": FAIL if wide else PASS})
    if wide:
        reasons.append(f"{side} leg: median cross-section {leg_cm2:.0f} cm2, wider than an adult calf "
                       f"(> {cfg['max_leg_area_cm2']:.0f} cm2): not a calf")


def _judge_certainty(s: StructureQC, c: dict[str, float], cfg: dict[str, Any]) -> None:
    flip = c.get("flip_dice")
    if flip is not None and np.isfinite(flip):
        s.add(FAIL if flip < cfg["flip_dice_fail"] else REVIEW if flip < cfg["flip_dice_review"] else PASS,
              f"flip agreement Dice {flip:.2f}", "flip agreement")
    for key, what in (("entropy", "mean normalised entropy"),
                      ("mirrored_entropy", "mean normalised entropy of the mirror-averaged probabilities")):
        ent = c.get(key)
        if ent is not None and np.isfinite(ent):
            s.add(FAIL if ent > cfg[f"{key}_fail"] else REVIEW if ent > cfg[f"{key}_review"] else PASS,
                  f"{what} {ent:.2f}", "entropy")


def _judge_ratios(out: dict[str, StructureQC], vol: dict[str, float], cfg: dict[str, Any], side: str,
                  checks: list[dict[str, Any]]) -> None:
    gm, gl = vol["gastrocnemius_medial"], vol["gastrocnemius_lateral"]
    if gm > 0 and gl > 0:
        ratio = gm / gl
        lo, hi = cfg["gm_to_gl_volume_ratio"]
        status = PASS if lo <= ratio <= hi else REVIEW
        checks.append({"check": "gm_to_gl_volume_ratio", "side": side, "value": round(ratio, 2), "status": status})
        for n in ("gastrocnemius_medial", "gastrocnemius_lateral"):
            out[n].add(status, f"medial/lateral gastrocnemius volume ratio {ratio:.2f} outside {lo}-{hi}",
                       "size relation")


def _judge_soleus_level(out: dict[str, StructureQC], stats: SliceStats, ids: dict[str, int], side: str,
                        checks: list[dict[str, Any]]) -> None:
    """Where soleus is widest (its largest cross-section, mid-calf), it is larger than either gastrocnemius head;
    a field of view that misses mid-calf leaves this unjudged. Judged per slice, so partial coverage of the knee
    end, where the gastrocnemii dominate, does not count against it."""
    sol = stats.count[ids["soleus"]]
    if sol.max() <= 0:
        return
    k = int(np.argmax(sol))
    if k in (0, len(sol) - 1):  # the widest level may lie outside the field of view
        return
    for head in ("gastrocnemius_medial", "gastrocnemius_lateral"):
        if stats.count[ids[head], k] > sol[k]:
            checks.append({"check": "soleus_widest_level", "side": side, "structure": head,
                           "value": round(float(stats.count[ids[head], k] / sol[k]), 2), "status": REVIEW})
            out["soleus"].add(REVIEW, f"at its widest level soleus is smaller than {head}", "size relation")
            out[head].add(REVIEW, "larger than soleus at the soleus's widest level", "size relation")


def _judge_asymmetry(structures: dict[str, dict[str, StructureQC]], stats: SliceStats, reg: Registry,
                     cfg: dict[str, Any], voxel_ml: float, checks: list[dict[str, Any]]) -> None:
    if len(structures) < 2:
        return
    for name in reg.muscles:
        r = float(stats.count[reg.sided_id(name, "right")].sum()) * voxel_ml
        left = float(stats.count[reg.sided_id(name, "left")].sum()) * voxel_ml
        if r <= 0 or left <= 0:
            continue
        ai = 100.0 * abs(r - left) / ((r + left) / 2)
        if ai > cfg["asymmetry_review_pct"]:
            checks.append({"check": "left_right_volume_difference_pct", "structure": name, "value": round(ai, 1),
                           "status": REVIEW})
            for side in structures:
                structures[side][name].add(REVIEW, f"left/right volume difference {ai:.0f} %", "left/right difference")


def flip_agreement(classes: np.ndarray, flipped_back: np.ndarray, legs: list[tuple[str, np.ndarray]],
                   class_names: tuple[str, ...] | list[str]) -> dict[str, dict[str, float]]:
    """Dice, per leg and class, between the network's class map and its class map of the left-right mirrored image
    mirrored back (test-time flip agreement): side -> class name -> Dice (classes absent from both are left out).

    >>> import numpy as np
    >>> a = np.zeros((4, 4, 1), np.uint8); a[:2] = 1; b = a.copy(); b[1] = 0
    >>> flip_agreement(a, b, [("left", np.ones(a.shape, bool))], ("background", "soleus"))
    {'left': {'soleus': 0.667}}
    """
    n = len(class_names)
    out: dict[str, dict[str, float]] = {}
    for side, mask in legs:
        a = classes[mask].astype(np.int64)
        b = flipped_back[mask].astype(np.int64)
        m = np.bincount(a * n + b, minlength=n * n).reshape(n, n)
        denom = m.sum(axis=1) + m.sum(axis=0)
        out[side] = {class_names[c]: round(float(2 * m[c, c] / denom[c]), 3) for c in range(1, n) if denom[c] > 0}
    return out


def structure_means(values: np.ndarray, classes: np.ndarray, legs: list[tuple[str, np.ndarray]],
                    class_names: tuple[str, ...] | list[str]) -> dict[str, dict[str, float]]:
    """Mean of a voxel map (e.g. the network's normalised entropy) over each class the network gave, per leg:
    side -> class name -> mean (classes absent from a leg are left out).

    >>> import numpy as np
    >>> c = np.array([[[0], [1]], [[1], [1]]], np.uint8); v = np.array([[[0.9], [0.1]], [[0.2], [0.3]]])
    >>> structure_means(v, c, [("right", np.ones(c.shape, bool))], ("background", "soleus"))
    {'right': {'soleus': 0.2}}
    """
    n = len(class_names)
    out: dict[str, dict[str, float]] = {}
    for side, mask in legs:
        k = classes[mask].astype(np.int64)
        sums = np.bincount(k, weights=np.asarray(values)[mask].astype(np.float64), minlength=n)
        counts = np.bincount(k, minlength=n)
        out[side] = {class_names[c]: round(float(sums[c] / counts[c]), 3) for c in range(1, n) if counts[c] > 0}
    return out
