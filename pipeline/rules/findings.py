"""The rules stage: YAML rules over the imaging summary and the clinical findings, with the evidence.

``evaluate_summary(summary, clinical, rules_path)`` takes the study's summary (what ``summary.json`` holds) and the
clinical file, derives the rule inputs (root-territory analysis, spine concordance, clinical signs; :mod:`pipeline.rules.derive`), fires the rules of
``configs/rules.yaml`` (:mod:`pipeline.rules.engine`) and returns the findings record (``findings.json``):

- ``caveat``: decision support, not a diagnosis;
- ``decision``: ``hypothesis`` (None unless a score reaches ``decision.min_score`` with ``decision.min_margin`` over
  the runner-up), ``status``, ``reason``, ``statement`` (e.g. "neurogenic muscle hypertrophy, right S1/L5 territory");
- ``scores`` per hypothesis (highest first); ``fired_rules`` with the values that fired them, points and reference;
  ``not_fired_rules``; ``not_evaluable_rules`` with the missing inputs and why;
- ``territory_analysis``: abnormal muscles per side, the affected side, the roots they share, bilateral fatty muscles;
- ``concordant_spine_findings``: levels whose narrowing on the affected side puts a territory root at risk, with the
  zone (central, lateral recess, foramen) and the grades;
- ``missing_data``: absent clinical inputs, underivable rule inputs, and the null or absent summary keys the rules
  read (with the reasons of ``summary.json``);
- ``derived_inputs`` (every rule symbol) and ``inputs`` (clinical file, rules file and its sha256);
- ``quality_control``: the calf segmentation's QC verdict, the summary values held back from the rules because the
  segmentation they rest on failed QC (:mod:`pipeline.rules.qc_gate`), and the caveats that follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.config import load_config
from pipeline.core.geometry import SIDES
from pipeline.core.labels import registry
from pipeline.core.provenance import file_sha256
from pipeline.core.summary import Summary
from pipeline.rules.clinical import Clinical, load_clinical
from pipeline.rules.derive import CLINICAL_SYMBOLS, Derived, derive, narrowing_zones, roots_at_risk
from pipeline.rules.engine import RuleSet, evaluate, load_rules
from pipeline.rules.qc_gate import gate, qc_caveats

#: version of the findings.json layout (pipeline/core/schemas/findings.schema.json)
FINDINGS_VERSION = 1
CAVEAT = ("Decision support, not a diagnosis: these findings rank hypotheses from automated measurements and the "
          "clinical findings given, with the rules and thresholds of configs/rules.yaml. A physician must review the "
          "images, the measurements and the patient.")


def _root_key(root: str) -> tuple[int, int]:
    return (0 if root[0] == "L" else 1, int(root[1:]))


def _statement(decision: dict[str, Any], d: Derived, clinical: Clinical | None, summary: Summary,
               innervation: dict[str, Any], ruleset: RuleSet) -> str:
    h = decision.get("hypothesis")
    if h is None:
        return decision["status"]
    if h != "neurogenic_hypertrophy":
        side = "bilateral" if h == "myopathic" and d.values.get("n_fatty_bilateral") else ""
        return f"{decision['title'].lower()}{', ' + side if side else ''}"
    side = d.territory["affected_side"]
    roots = d.territory["territory_roots"]
    affected = d.territory["affected_muscles"][side]
    main = sorted({innervation["muscles"][m]["roots"][0] for m in affected} & set(roots), key=_root_key) or roots[:1]
    support: set[str] = set()
    if clinical is not None and clinical.emg:
        support |= {e.root for e in clinical.emg if e.side == side and e.finding.endswith("neurogenic")}
    for lv in d.territory["spine_concordant_levels"]:
        support |= roots_at_risk(summary, lv, side, innervation, ruleset.thresholds)
    extra = sorted((support - set(roots)) & set(ruleset.raw["statement"]["supporting_roots"]), key=_root_key)
    return f"neurogenic muscle hypertrophy, {side} {'/'.join(main + extra)} territory"


def _concordant(summary: Summary, d: Derived, innervation: dict[str, Any],
                thr: dict[str, float]) -> list[dict[str, Any]]:
    side = d.territory["affected_side"]
    territory = set(d.territory["territory_roots"])
    out = []
    for lv in d.territory["spine_concordant_levels"]:
        zones = narrowing_zones(summary, lv, side, innervation, thr)
        out.append({"level": lv, "side": side, "central_grade": summary.get(f"spine.{lv}.central_grade"),
                    "dsca_mm2": summary.get(f"spine.{lv}.dsca_mm2"),
                    "lateral_recess_grade": summary.get(f"spine.{lv}.{side}.lateral_recess_grade"),
                    "lateral_recess_depth_mm": summary.get(f"spine.{lv}.{side}.lateral_recess_depth_mm"),
                    "foramen_grade": summary.get(f"spine.{lv}.{side}.foramen_grade"),
                    "roots_at_risk": ",".join(sorted(roots_at_risk(summary, lv, side, innervation, thr),
                                                     key=_root_key)),
                    "territory_roots_explained": sorted(roots_at_risk(summary, lv, side, innervation, thr)
                                                        & territory, key=_root_key),
                    "zones": zones,
                    "zones_explaining": {z: sorted(set(r) & territory, key=_root_key) for z, r in zones.items()
                                         if set(r) & territory}})
    return out


SPINE_LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")


def imaging_gaps(summary: Summary, innervation: dict[str, Any]) -> dict[str, str]:
    """The summary keys the rules read that are null or absent, with the reason from ``summary.json`` ``missing``."""
    gaps: dict[str, str] = {}
    sections = {"calf": ["calf.asymmetry.girth_diff_cm"] + [
        k for m in innervation["muscles"] for k in (f"calf.left.{m}.ff_pct", f"calf.right.{m}.ff_pct",
                                                     f"calf.asymmetry.{m}.volume_ai_pct",
                                                     f"calf.asymmetry.{m}.lean_volume_ai_pct")],
        "spine": [k for lv in SPINE_LEVELS for k in (f"spine.{lv}.central_grade",) + tuple(
            f"spine.{lv}.{side}.{q}" for side in SIDES for q in ("lateral_recess_grade", "foramen_grade"))]}
    for name, keys in sections.items():
        if not summary.get(f"{name}.available"):
            gaps[f"{name}.available"] = summary.missing.get(f"{name}.available", f"no {name} measurements")
            continue
        for k in keys:
            if summary.get(k) is None:
                gaps[k] = summary.missing.get(k, "absent from summary.json")
    return gaps


def findings(summary: Summary, clinical: Clinical | None, ruleset: RuleSet) -> dict[str, Any]:
    """The findings record (what findings.json holds) for a summary and clinical findings; values resting on a
    segmentation that failed QC are held back from the rules first."""
    full = summary
    summary, held = gate(full, registry("calf").groups())
    innervation = load_config("innervation")
    thr = ruleset.thresholds
    d = derive(summary, clinical, innervation, thr)
    result = evaluate(ruleset, d)
    result["decision"]["statement"] = _statement(result["decision"], d, clinical, summary, innervation, ruleset)
    territory = dict(d.territory)
    territory["status"] = {s: {m: v for m, v in st.items() if v["enlarged"] or v["fatty"] or v["complete_fatty"]}
                           for s, st in territory["status"].items()}
    missing_clinical = sorted({s for s in d.missing if s in CLINICAL_SYMBOLS})
    missing_imaging = {k: v for k, v in d.missing.items() if k not in CLINICAL_SYMBOLS}
    return {
        "schema_version": FINDINGS_VERSION,
        "caveat": CAVEAT,
        "decision": result["decision"],
        "scores": result["scores"],
        "fired_rules": result["fired_rules"],
        "not_fired_rules": result["not_fired_rules"],
        "not_evaluable_rules": result["not_evaluable_rules"],
        "territory_analysis": territory,
        "concordant_spine_findings": _concordant(summary, d, innervation, thr),
        "missing_data": {"clinical_input": clinical is None, "clinical": {s: d.missing[s] for s in missing_clinical},
                         "imaging": missing_imaging, "summary": imaging_gaps(summary, innervation)},
        "derived_inputs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.values.items()},
        "hypotheses": {k: v["title"] for k, v in ruleset.hypotheses.items()},
        "quality_control": {"calf_status": full.get("calf.qc_status"), "calf_reasons": full.get("calf.qc_reasons"),
                            "spine_status": full.get("spine.qc_status"), "spine_reasons": full.get("spine.qc_reasons"),
                            "held_back": held, "caveats": qc_caveats(full)},
    }


def evaluate_summary(summary: Summary, clinical: Path | None = None, rules_path: Path | None = None
                     ) -> dict[str, Any]:
    """The findings record of a study's ``summary`` with the clinical file and rules file (default
    ``configs/rules.yaml``) it was made from, and the rules file's sha256."""
    ruleset = load_rules(rules_path)
    c = load_clinical(clinical) if clinical is not None else None
    record = findings(summary, c, ruleset)
    record["inputs"] = {"clinical_file": str(clinical) if clinical else None, "rules_file": str(ruleset.path),
                        "rules_sha256": file_sha256(ruleset.path)}
    return record
