"""The rules never use a value whose segmentation failed quality control.

``summary.json`` carries ``calf.qc_status`` and ``calf.<side>.<structure>.qc_status`` (:mod:`pipeline.calf.qc`).
Before the rules read a summary, :func:`gate` turns every calf value that rests on a failed segmentation into a null
whose reason names the failure, and lists what it held back:

* the study failed: every calf measurement (volumes, CSA, FF, girth, asymmetry);
* a structure failed in a leg: that structure's values in that leg, the groups that contain it (e.g. triceps surae
  holds soleus), and the left/right asymmetry of both.

The same for the spine (``spine.qc_status``, ``spine.<level>.qc_status``; :mod:`pipeline.spine.qc`): a failed study
holds back every level's values, a failed level that level's values.

Values marked ``review`` are used, and the findings say so. A summary without QC keys passes unchanged.
"""

from __future__ import annotations

from pipeline.core.summary import Summary

FAIL = "fail"


def _failed_structures(summary: Summary) -> dict[tuple[str, str], str]:
    """(side, structure) -> reason of every structure whose QC failed."""
    out = {}
    for key, value in summary.values.items():
        if key.startswith("calf.") and key.endswith(".qc_status") and value == FAIL and key.count(".") == 3:
            _, side, structure, _ = key.split(".")
            out[(side, structure)] = str(summary.get(f"calf.{side}.{structure}.qc_reasons") or "")
    return out


def _blocked(key: str, failed: dict[tuple[str, str], str], groups: dict[str, tuple[str, ...]]) -> str | None:
    parts = key.split(".")
    if len(parts) < 4 or parts[-1] in ("qc_status", "qc_reasons"):
        return None
    side, name = parts[1], parts[2]
    members = groups.get(name, (name,))
    sides = ("left", "right") if side == "asymmetry" else (side,)
    for s in sides:
        for m in members:
            if (s, m) in failed:
                return f"{s} {m} failed segmentation QC ({failed[(s, m)] or 'see calf.qc_reasons'})"
    return None


def gate(summary: Summary, groups: dict[str, tuple[str, ...]]) -> tuple[Summary, dict[str, str]]:
    """A copy of ``summary`` with every value that rests on a failed calf segmentation set to null, and the held-back
    keys with their reasons. ``groups`` maps group names to their member structures (``Registry.groups()``).

    >>> s = Summary({"calf.qc_status": "review", "calf.right.soleus.qc_status": "fail",
    ...              "calf.right.soleus.qc_reasons": "in pieces", "calf.right.soleus.volume_ml": 400.0,
    ...              "calf.left.soleus.volume_ml": 300.0, "calf.asymmetry.soleus.volume_ai_pct": 28.6})
    >>> g, held = gate(s, {})
    >>> g.get("calf.right.soleus.volume_ml"), g.get("calf.left.soleus.volume_ml"), sorted(held)
    (None, 300.0, ['calf.asymmetry.soleus.volume_ai_pct', 'calf.right.soleus.volume_ml'])
    """
    out = Summary(dict(summary.values), dict(summary.missing))
    held: dict[str, str] = {}
    _gate_spine(summary, out, held)
    study_failed = summary.get("calf.qc_status") == FAIL
    failed = _failed_structures(summary)
    for key, value in summary.values.items():
        if not key.startswith("calf.") or value is None or key in ("calf.available", "calf.qc_status",
                                                                   "calf.qc_reasons", "calf.legs_present"):
            continue
        if key.endswith((".qc_status", ".qc_reasons")):
            continue
        reason = None
        if study_failed:
            reason = f"calf segmentation failed QC: {summary.get('calf.qc_reasons') or 'see the report'}"
        else:
            reason = _blocked(key, failed, groups)
        if reason:
            out.set_null(key, reason)
            held[key] = reason
    return out, held


def _gate_spine(summary: Summary, out: Summary, held: dict[str, str]) -> None:
    """Hold back (in ``out`` and ``held``) every spine level value whose study or level failed spine QC.

    >>> s = Summary({"spine.qc_status": "review", "spine.L4-L5.qc_status": "fail", "spine.L4-L5.qc_reasons": "no sac",
    ...              "spine.L4-L5.dsca_mm2": 60.0, "spine.L3-L4.dsca_mm2": 120.0})
    >>> out, held = Summary(dict(s.values)), {}
    >>> _gate_spine(s, out, held); out.get("spine.L4-L5.dsca_mm2"), out.get("spine.L3-L4.dsca_mm2"), list(held)
    (None, 120.0, ['spine.L4-L5.dsca_mm2'])
    """
    study_failed = summary.get("spine.qc_status") == FAIL
    for key, value in summary.values.items():
        parts = key.split(".")
        if not key.startswith("spine.") or value is None or len(parts) < 3 or parts[-1] in ("qc_status",
                                                                                           "qc_reasons"):
            continue
        level = parts[1]
        if study_failed:
            reason = f"spine segmentation failed QC: {summary.get('spine.qc_reasons') or 'see the report'}"
        elif summary.get(f"spine.{level}.qc_status") == FAIL:
            reason = f"{level} failed spine QC ({summary.get(f'spine.{level}.qc_reasons') or 'see the report'})"
        else:
            continue
        out.set_null(key, reason)
        held[key] = reason


def qc_caveats(summary: Summary) -> list[str]:
    """Sentences for the findings: the calf and spine QC verdicts when they are not a pass."""
    out = []
    for anatomy, name in (("calf", "Calf"), ("spine", "Lumbar spine")):
        status = summary.get(f"{anatomy}.qc_status")
        if status in (None, "pass"):
            continue
        text = summary.get(f"{anatomy}.qc_reasons") or "see the report"
        if status == FAIL:
            out.append(f"{name} segmentation failed quality control; no {anatomy} value was used: {text}")
        else:
            out.append(f"{name} segmentation needs review; values that failed QC were not used: {text}")
    return out
