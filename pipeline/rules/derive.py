"""Inputs of the diagnostic rules, derived from ``summary.json`` and the clinical findings.

The key derivation is the **root-territory analysis**: which calf muscles are abnormal on each side (enlarged by
volume asymmetry, fatty by fat fraction), whether the abnormal muscles of one side share a spinal root
(``configs/innervation.yaml``; e.g. gastrocnemius and soleus: S1), whether the change is bilateral and symmetric
across several roots instead (a myopathic pattern), whether an enlarged muscle gained lean tissue (true hypertrophy)
or fat (pseudohypertrophy), and whether a lumbar narrowing on the same side puts one of those roots at risk
(``spine.<level>.<side>.roots_at_risk``).

Every symbol the rules may use is declared in :data:`SYMBOLS` with its type; a value that cannot be derived is None
and the rules that need it are reported as not evaluable, with the reason.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import rule_engine

from pipeline.core.geometry import SIDES
from pipeline.core.summary import Summary
from pipeline.rules.clinical import Clinical

T = rule_engine.DataType
SYMBOLS: dict[str, tuple[Any, str]] = {
    # imaging: calf
    "calf_available": (T.BOOLEAN, "a calf Dixon series was measured"),
    "both_legs": (T.BOOLEAN, "both legs are in the field of view"),
    "girth_diff_cm": (T.FLOAT, "calf girth right minus left at the matched level (cm)"),
    "girth_diff_abs_cm": (T.FLOAT, "absolute calf girth difference (cm)"),
    "larger_side": (T.STRING, "side with the larger calf girth"),
    "affected_side": (T.STRING, "the only side with abnormal muscles ('' when none or both)"),
    "n_affected_right": (T.FLOAT, "abnormal (enlarged or fatty) muscles on the right"),
    "n_affected_left": (T.FLOAT, "abnormal (enlarged or fatty) muscles on the left"),
    "n_affected_side": (T.FLOAT, "abnormal muscles on the affected side (0 when none or both sides)"),
    "n_enlarged_affected_side": (T.FLOAT, "enlarged muscles on the affected side"),
    "n_fatty_affected_side": (T.FLOAT, "fatty muscles on the affected side"),
    "n_complete_fatty_affected_side": (T.FLOAT, "muscles with complete fatty change on the affected side"),
    "n_true_hypertrophy": (T.FLOAT, "enlarged muscles whose lean volume is also larger (true hypertrophy)"),
    "n_pseudohypertrophy": (T.FLOAT, "enlarged muscles whose lean volume is not larger (pseudohypertrophy)"),
    "territory_fit": (T.BOOLEAN, "the abnormal muscles of the affected side share a spinal root"),
    "territory_roots": (T.ARRAY(T.STRING), "roots shared by the abnormal muscles of the affected side"),
    "n_fatty_bilateral": (T.FLOAT, "muscles fatty on both sides"),
    "n_roots_bilateral": (T.FLOAT, "roots whose territory holds a muscle fatty on both sides"),
    "max_abs_volume_ai_pct": (T.FLOAT, "largest absolute left/right volume asymmetry of a muscle (%)"),
    "median_abs_volume_ai_bilateral_pct": (T.FLOAT, "median absolute volume asymmetry of the muscles fatty on both "
                                                   "sides (%)"),
    "single_muscle_enlarged": (T.BOOLEAN, "exactly one abnormal muscle in both legs, enlarged by at least the focal "
                                          "threshold"),
    # imaging: spine
    "spine_available": (T.BOOLEAN, "a lumbar series was measured"),
    "spine_concordant": (T.BOOLEAN, "a lumbar narrowing on the affected side puts a territory root at risk"),
    "spine_concordant_levels": (T.ARRAY(T.STRING), "levels of the concordant narrowings"),
    "any_central_stenosis": (T.BOOLEAN, "some level has relative or absolute central stenosis"),
    # clinical
    "ck_x_uln": (T.FLOAT, "CK / upper limit of normal"),
    "emg_neurogenic_territory": (T.BOOLEAN, "EMG neurogenic change in a territory root on the affected side"),
    "emg_neurogenic_any": (T.BOOLEAN, "EMG neurogenic change in any root"),
    "emg_normal_territory": (T.BOOLEAN, "EMG examined a territory root on the affected side and found it normal"),
    "emg_myopathic": (T.BOOLEAN, "EMG myopathic units or complex repetitive discharges"),
    "ankle_reflex_reduced_affected_side": (T.BOOLEAN, "ankle reflex of the affected side below 2 or below the other"),
    "weakness_affected_side": (T.BOOLEAN, "MRC < 5 in any movement on the affected side"),
    "sensory_loss_territory": (T.BOOLEAN, "sensory loss in a territory-root dermatome on the affected side"),
    "slr_positive_affected_side": (T.BOOLEAN, "straight-leg raise positive on the affected side"),
    "oedema_clinical": (T.BOOLEAN, "clinical leg oedema"),
    "acute_onset": (T.BOOLEAN, "acute onset"),
    "pain": (T.BOOLEAN, "pain reported"),
}
#: in a fixed order (a tuple, not a set): the derived inputs are written in this order, and a set's order changes
#: with the process's hash seed, which made findings.json differ between two runs of one study
CLINICAL_SYMBOLS = ("ck_x_uln", "emg_neurogenic_territory", "emg_normal_territory", "emg_neurogenic_any",
                    "emg_myopathic", "ankle_reflex_reduced_affected_side", "weakness_affected_side",
                    "sensory_loss_territory", "slr_positive_affected_side", "oedema_clinical", "acute_onset", "pain")


@dataclass
class Derived:
    values: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    territory: dict[str, Any] = field(default_factory=dict)

    def put(self, name: str, value: Any, reason: str = "") -> None:
        if name not in SYMBOLS:
            raise KeyError(f"undeclared rule symbol '{name}'")
        self.values[name] = value
        if value is None:
            self.missing[name] = reason or "not available"


def _root_key(root: str) -> tuple[int, int]:
    return (0 if root[0] == "L" else 1, int(root[1:]))


def muscle_status(summary: Summary, muscles: list[str], thr: dict[str, float]) -> dict[str, dict[str, dict]]:
    """Per side and muscle: enlarged / fatty / complete fatty / true or pseudo hypertrophy, with the values used."""
    out: dict[str, dict[str, dict]] = {s: {} for s in SIDES}
    for m in muscles:
        ai = summary.get(f"calf.asymmetry.{m}.volume_ai_pct")
        lean_ai = summary.get(f"calf.asymmetry.{m}.lean_volume_ai_pct")
        for side in SIDES:
            ff = summary.get(f"calf.{side}.{m}.ff_pct")
            signed = None if ai is None else (ai if side == "right" else -ai)
            lean = None if lean_ai is None else (lean_ai if side == "right" else -lean_ai)
            enlarged = signed is not None and signed >= thr["enlarged_volume_ai_pct"]
            fatty = ff is not None and ff >= thr["fatty_ff_pct"]
            out[side][m] = {"enlarged": enlarged, "fatty": fatty,
                            "complete_fatty": ff is not None and ff >= thr["complete_fatty_ff_pct"],
                            "true_hypertrophy": enlarged and lean is not None and lean >= thr["true_hypertrophy_lean_ai_pct"],
                            "volume_ai_pct_vs_other": signed, "lean_volume_ai_pct_vs_other": lean, "ff_pct": ff}
    return out


def narrowing_zones(summary: Summary, level: str, side: str, innervation: dict[str, Any],
                    thr: dict[str, float]) -> dict[str, list[str]]:
    """Roots put at risk at ``level`` on ``side``, per narrowed zone (``spinal_levels`` of innervation.yaml).

    central: relative or absolute central stenosis (DSCA grade) -> the cauda equina roots below the level;
    lateral_recess: recess graded narrowed on that side -> the traversing root;
    foramen: foraminal grade >= ``thr['foramen_min_grade']`` on that side -> the exiting root.
    """
    zone = (innervation.get("spinal_levels") or {}).get(level)
    if not zone:
        return {}
    out: dict[str, list[str]] = {}
    if summary.get(f"spine.{level}.central_grade") in ("relative", "absolute"):
        out["central"] = list(zone["central"])
    if summary.get(f"spine.{level}.{side}.lateral_recess_grade") == "narrowed":
        out["lateral_recess"] = list(zone["lateral_recess"])
    fg = summary.get(f"spine.{level}.{side}.foramen_grade")
    if fg is not None and fg >= thr["foramen_min_grade"]:
        out["foramen"] = list(zone["foramen"])
    return out


def roots_at_risk(summary: Summary, level: str, side: str, innervation: dict[str, Any],
                  thr: dict[str, float]) -> set[str]:
    """``spine.<level>.<side>.roots_at_risk`` as measured; from the zone grades when the summary lacks that key."""
    key = f"spine.{level}.{side}.roots_at_risk"
    if key in summary.values:
        return set((summary.get(key) or "").split(",")) - {""}
    return {r for roots in narrowing_zones(summary, level, side, innervation, thr).values() for r in roots}


def affected_side(affected: dict[str, list[str]], status: dict[str, dict[str, dict]], thr: dict[str, float]) -> str:
    """The side with the abnormal muscles, or '' when none or both.

    Sides rank by their fatty muscles, then by all abnormal muscles (fat fraction does not depend on how much of a
    muscle was outlined; volume asymmetry does). The other side may hold up to
    ``thr['contralateral_tolerance_muscles']`` abnormal muscles when none of them is fatty (enlargement alone on the
    other side is within normal variation or outlining error).
    """
    n = {s: len(affected[s]) for s in SIDES}
    n_fat = {s: sum(status[s][m]["fatty"] for m in affected[s]) for s in SIDES}
    side = max(SIDES, key=lambda s: (n_fat[s], n[s]))
    other = "left" if side == "right" else "right"
    if n[side] == 0 or (n_fat[side], n[side]) == (n_fat[other], n[other]):
        return ""
    tolerated = n_fat[other] == 0 and n[other] <= thr["contralateral_tolerance_muscles"]
    return side if n[other] == 0 or tolerated else ""


def root_territory(muscles: list[str], innervation: dict[str, Any],
                   thr: dict[str, float]) -> tuple[list[str], bool, list[str]]:
    """(roots, fit, outliers): the roots innervating most of ``muscles`` (``innervation.yaml``), whether the muscles
    form a root territory, and the muscles outside it.

    Fit: at least ``thr['territory_min_muscles']`` muscles share the root and at most
    ``thr['territory_outlier_muscles']`` abnormal muscles lie outside it. A single muscle gives its own roots, no fit.
    """
    counts: dict[str, int] = {}
    for m in muscles:
        for r in innervation["muscles"][m]["roots"]:
            counts[r] = counts.get(r, 0) + 1
    if not counts:
        return [], False, []
    best = max(counts.values())
    roots = sorted((r for r, c in counts.items() if c == best), key=_root_key)
    outliers = [m for m in muscles if not set(innervation["muscles"][m]["roots"]) >= set(roots)]
    fit = best >= thr["territory_min_muscles"] and len(outliers) <= thr["territory_outlier_muscles"]
    return roots, fit, outliers


def derive(summary: Summary, clinical: Clinical | None, innervation: dict[str, Any], thr: dict[str, float]) -> Derived:
    d = Derived()
    muscles = list(innervation["muscles"])
    calf_ok = bool(summary.get("calf.available"))
    d.put("calf_available", calf_ok)
    legs = (summary.get("calf.legs_present") or "").split(",")
    d.put("both_legs", set(legs) == set(SIDES))
    g = summary.get("calf.asymmetry.girth_diff_cm")
    d.put("girth_diff_cm", g, summary.missing.get("calf.asymmetry.girth_diff_cm", "no calf girth"))
    d.put("girth_diff_abs_cm", None if g is None else abs(g), "no calf girth")
    d.put("larger_side", "" if g is None else ("right" if g > 0 else "left"))
    status = muscle_status(summary, muscles, thr)
    unknown = calf_unknown_reason(summary, status)
    affected = {s: sorted(m for m, st in status[s].items() if st["enlarged"] or st["fatty"]) for s in SIDES}
    for s in SIDES:
        d.put(f"n_affected_{s}", float(len(affected[s])))
    fatty_both = [m for m in muscles if status["left"][m]["fatty"] and status["right"][m]["fatty"]]
    d.put("n_fatty_bilateral", float(len(fatty_both)))
    d.put("n_roots_bilateral", float(len({innervation["muscles"][m]["roots"][0] for m in fatty_both})))
    ais = [abs(st["volume_ai_pct_vs_other"]) for st in status["right"].values() if st["volume_ai_pct_vs_other"] is not None]
    d.put("max_abs_volume_ai_pct", max(ais) if ais else None, "no left/right volume comparison")
    bil = [abs(status["right"][m]["volume_ai_pct_vs_other"]) for m in fatty_both
           if status["right"][m]["volume_ai_pct_vs_other"] is not None]
    d.put("median_abs_volume_ai_bilateral_pct", float(statistics.median(bil)) if bil else None,
          "no muscle fatty on both sides with a left/right volume comparison")
    side = affected_side(affected, status, thr)
    d.put("affected_side", side)
    st_side = status[side] if side else {}
    aff = affected[side] if side else []
    d.put("n_affected_side", float(len(aff)))
    d.put("n_enlarged_affected_side", float(sum(st_side[m]["enlarged"] for m in aff)))
    d.put("n_fatty_affected_side", float(sum(st_side[m]["fatty"] for m in aff)))
    d.put("n_complete_fatty_affected_side", float(sum(st_side[m]["complete_fatty"] for m in aff)))
    enlarged_all = [(s, m) for s in SIDES for m in muscles if status[s][m]["enlarged"]]
    d.put("n_true_hypertrophy", float(sum(status[s][m]["true_hypertrophy"] for s, m in enlarged_all)))
    d.put("n_pseudohypertrophy", float(sum(not status[s][m]["true_hypertrophy"] for s, m in enlarged_all)))
    roots, fit, outliers = root_territory(aff, innervation, thr)
    d.put("territory_fit", fit)
    d.put("territory_roots", tuple(roots))
    d.put("single_muscle_enlarged", len(enlarged_all) == 1 and sum(len(a) for a in affected.values()) == 1
          and abs(status[enlarged_all[0][0]][enlarged_all[0][1]]["volume_ai_pct_vs_other"])
          >= thr["focal_enlarged_volume_ai_pct"])
    # spine concordance
    spine_ok = bool(summary.get("spine.available"))
    d.put("spine_available", spine_ok)
    levels = sorted({k.split(".")[1] for k in summary.values if k.startswith("spine.L")})
    d.put("any_central_stenosis", any(summary.get(f"spine.{lv}.central_grade") in ("relative", "absolute")
                                      for lv in levels) if spine_ok else None, "no lumbar series measured")
    concordant = []
    if side and roots and spine_ok:
        for lv in levels:
            if roots_at_risk(summary, lv, side, innervation, thr) & set(roots):
                concordant.append(lv)
    d.put("spine_concordant", bool(concordant) if spine_ok else None, "no lumbar series measured")
    d.put("spine_concordant_levels", tuple(concordant))
    other = [] if not side else affected["left" if side == "right" else "right"]
    d.territory = {"affected_muscles": affected, "affected_side": side or None, "territory_roots": roots,
                   "territory_fit": fit, "outside_territory": outliers, "contralateral_tolerated": other,
                   "fatty_bilateral": fatty_both, "status": status, "spine_concordant_levels": concordant}
    if unknown:  # nothing was read: counts of 0 would say "no muscle abnormal" of muscles nobody measured
        for name in CALF_MUSCLE_SYMBOLS:
            d.put(name, None, unknown)
        if spine_ok:
            d.put("spine_concordant", None, unknown)
    _clinical(d, clinical, side, roots, thr)
    return d


#: rule symbols derived from the per-muscle calf values (counts, the affected side, the territory)
CALF_MUSCLE_SYMBOLS = ("n_affected_left", "n_affected_right", "n_fatty_bilateral", "n_roots_bilateral",
                       "affected_side", "n_affected_side", "n_enlarged_affected_side", "n_fatty_affected_side",
                       "n_complete_fatty_affected_side", "n_true_hypertrophy", "n_pseudohypertrophy", "territory_fit",
                       "single_muscle_enlarged")


def calf_unknown_reason(summary: Summary, status: dict[str, dict[str, dict]]) -> str | None:
    """Why no calf muscle can be judged, or None when at least one muscle of one leg has a fat fraction or a
    left/right volume index: a study without a calf, or one whose calf values were all held back by QC
    (:func:`pipeline.rules.qc_gate.gate`). Then the counts over muscles are unknown, not 0."""
    if any(st["ff_pct"] is not None or st["volume_ai_pct_vs_other"] is not None
           for side in status.values() for st in side.values()):
        return None
    if not summary.get("calf.available"):
        return summary.missing.get("calf.available") or "no calf measured"
    reasons = [r for k, r in summary.missing.items() if k.startswith("calf.") and k.endswith((".ff_pct", ".volume_ml",
                                                                                             ".volume_ai_pct"))]
    return reasons[0] if reasons else "no calf muscle has a fat fraction or a left/right volume comparison"


def _clinical(d: Derived, c: Clinical | None, side: str, roots: list[str], thr: dict[str, float]) -> None:
    if c is None:
        for name in CLINICAL_SYMBOLS:
            d.put(name, None, "no clinical findings given")
        return
    labs = c.labs
    if labs and labs.ck_u_l is not None and labs.ck_uln_u_l:
        d.put("ck_x_uln", labs.ck_u_l / labs.ck_uln_u_l)
    else:
        d.put("ck_x_uln", None, "CK or its upper limit of normal not given")
    if c.emg is None:
        for name in ("emg_neurogenic_territory", "emg_normal_territory", "emg_neurogenic_any", "emg_myopathic"):
            d.put(name, None, "no EMG findings given")
    else:
        neuro = [e for e in c.emg if e.finding in ("chronic_neurogenic", "active_neurogenic")]
        d.put("emg_neurogenic_any", bool(neuro))
        d.put("emg_neurogenic_territory", any(e.side == side and e.root in roots for e in neuro) if side else False)
        tested = [e for e in c.emg if side and e.side == side and e.root in roots]
        d.put("emg_normal_territory", bool(tested) and all(e.finding == "normal" for e in tested))
        d.put("emg_myopathic", any(e.finding in ("myopathic_units", "complex_repetitive_discharges") for e in c.emg))
    ankle = (c.reflexes or {}).get("ankle")
    if side and ankle and getattr(ankle, side) is not None:
        other = getattr(ankle, "left" if side == "right" else "right")
        own = getattr(ankle, side)
        d.put("ankle_reflex_reduced_affected_side", own < 2 or (other is not None and own < other))
    else:
        d.put("ankle_reflex_reduced_affected_side", None, "no affected side or no ankle reflex given")
    if side and c.strength_mrc:
        vals = [getattr(p, side) for p in c.strength_mrc.values() if getattr(p, side) is not None]
        d.put("weakness_affected_side", any(v < thr["mrc_full_strength"] for v in vals) if vals else None,
              "no strength on that side")
    else:
        d.put("weakness_affected_side", None, "no affected side or no strength testing given")
    if side and c.sensory_loss is not None:
        d.put("sensory_loss_territory", any(s.side == side and s.dermatome in roots and s.percent > 0
                                            for s in c.sensory_loss))
    else:
        d.put("sensory_loss_territory", None, "no affected side or no sensory examination given")
    slr = c.straight_leg_raise
    if side and slr is not None and getattr(slr, side) is not None:
        d.put("slr_positive_affected_side", bool(getattr(slr, side).positive))
    else:
        d.put("slr_positive_affected_side", None, "no affected side or no straight-leg raise given")
    d.put("oedema_clinical", c.oedema, "oedema not reported")
    d.put("acute_onset", None if c.onset is None else c.onset == "acute", "onset not reported")
    d.put("pain", None if c.pain is None else c.pain.present, "pain not reported")
