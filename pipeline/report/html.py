"""HTML reports: a self-contained ``report.html`` per study and ``index.html`` + ``cohort.csv`` for a batch.

Reports read the saved outputs (``series.json``, ``summary.json``, ``findings.json``, ``provenance.json``,
``qa/*.png``) and never recompute a measurement; images are embedded as base64 so one file travels alone.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from pipeline.core.atomic import write_text
from pipeline.core.labels import registry
from pipeline.core.layout import BatchDir, StudyDir
from pipeline.core.units import split_unit
from pipeline.core.verdict import REASON_SEPARATOR, group_verdict, level_verdict

TEMPLATES = Path(__file__).with_name("templates")
CALF_METRICS = ("volume_ml", "lean_volume_ml", "ff_pct", "max_csa_mm2", "matched_csa_mm2", "mercuri_grade")
#: How many muscles fatty on both sides the evidence line names (:func:`evidence_line`).
BILATERAL_SHOWN = 4
#: The leg outline's values in the report's girth line.
GIRTH_KEYS = ("calf.right.girth_max_mm", "calf.left.girth_max_mm", "calf.girth_matched_z_mm",
              "calf.right.girth_matched_mm", "calf.left.girth_matched_mm", "calf.asymmetry.girth_diff_cm")
AI_METRICS = ("volume_ai_pct", "max_csa_ai_pct", "matched_csa_ai_pct", "lean_volume_ai_pct", "ff_diff_pp")
LEVEL_RE = re.compile(r"^spine\.((?:L[1-5])-(?:L[1-5]|S1)|disc_[0-9]+)\.")


def _level_order(level: str) -> tuple[int, int]:
    """Named levels first, cranial to caudal (L1-L2 .. L5-S1), then unnamed discs top to bottom (disc_N .. disc_1)."""
    return (1, -int(level.split("_")[1])) if level.startswith("disc_") else (0, int(level[1]))


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.globals["reason_separator"] = REASON_SEPARATOR  # QC reasons are listed one per line
    return env


def fmt(value: Any, digits: int = 1) -> str:
    """Display a value: numbers rounded, None as an en dash.

    >>> fmt(12.345), fmt(None), fmt(3), fmt(True)
    ('12.3', '–', '3', 'yes')
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def calf_tables(values: Mapping[str, Any], missing: Mapping[str, str], muscles: Sequence[str],
                groups: Mapping[str, Sequence[str]], asym_flag_pct: float, ff_flag_pp: float) -> list[dict[str, Any]]:
    """One row per muscle/group: right and left metrics, each side's segmentation QC verdict (``qc``: pass, review,
    fail, or None for studies without QC; a group's is its members', and every one fails when the study failed:
    :func:`~pipeline.core.verdict.group_verdict`) and the asymmetry values
    with flags, from summary values. ``groups`` maps a group's name to its member structures."""
    rows = []
    for name in (*muscles, *groups):
        members = groups.get(name, (name,))
        r = {"name": name, "group": name in groups, "right": {}, "left": {}, "asym": {}, "flags": [], "why": {},
             "qc": {side: group_verdict([values.get(f"calf.{side}.{m}.qc_status") for m in members],
                                        study=values.get("calf.qc_status")) for side in ("right", "left")}}
        for side in ("right", "left"):
            for m in CALF_METRICS:
                key = f"calf.{side}.{name}.{m}"
                r[side][m] = values.get(key)
                if key in missing:
                    r["why"][f"{side}.{m}"] = missing[key]
        for m in AI_METRICS:
            v = values.get(f"calf.asymmetry.{name}.{m}")
            r["asym"][m] = v
            limit = ff_flag_pp if m == "ff_diff_pp" else asym_flag_pct
            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) >= limit:
                r["flags"].append(m)
        if any(v is not None for v in (*r["right"].values(), *r["left"].values())) or r["why"]:
            rows.append(r)
    return rows


def spine_rows(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per lumbar level with a verdict or a value (named, then the unnamed discs numbered from the bottom of
    the field of view) with its QC verdict (``qc``; fail for every level with a verdict when the spine study
    failed), central and per-side measures and grades, from summary values.

    >>> rows = spine_rows({"spine.qc_status": "fail", "spine.L4-L5.dsca_mm2": None, "spine.disc_1.dsca_mm2": 60.0,
    ...                    "spine.disc_1.qc_status": "pass"})
    >>> [(r["level"], r["qc"]) for r in rows]
    [('disc_1', 'fail')]
    """
    levels = sorted({m.group(1) for k in values if (m := LEVEL_RE.match(k))}, key=_level_order)
    rows = []
    for lv in levels:
        g = lambda k, lv=lv: values.get(f"spine.{lv}.{k}")  # noqa: E731
        own = g("qc_status")  # a level without its own verdict (named but not in this study) takes none
        if own is None and all(v is None for k, v in values.items() if k.startswith(f"spine.{lv}.")):
            continue  # a named level of a study whose levels are numbered: nothing to show
        rows.append({"level": lv, "qc": level_verdict(own, values.get("spine.qc_status")), "dsca_mm2": g("dsca_mm2"),
                     "ap_diameter_mm": g("ap_diameter_mm"), "central_grade": g("central_grade"), "roots_at_risk": g("roots_at_risk"),
                     "canal_rsna": g("canal_rsna"),
                     "sides": {s: {"recess_mm": g(f"{s}.lateral_recess_depth_mm"),
                                   "recess_grade": g(f"{s}.lateral_recess_grade"),
                                   "subarticular_rsna": g(f"{s}.subarticular_rsna"),
                                   "foraminal_rsna": g(f"{s}.foraminal_rsna"),
                                   "foramen_mm2": g(f"{s}.foramen_area_mm2"), "foramen_grade": g(f"{s}.foramen_grade"),
                                   "roots": g(f"{s}.roots_at_risk")} for s in ("right", "left")}})
    return rows


#: muscles named in full in the report although the registry abbreviates them (SOL and PER read less easily)
SPELLED_OUT = ("soleus", "peroneus")


def short_name(structure: str) -> str:
    """A calf structure as the report names it: the registry's abbreviation (``configs/labels.yaml``), except the
    muscles of :data:`SPELLED_OUT`; any other name with spaces.

    >>> short_name("gastrocnemius_medial"), short_name("soleus"), short_name("triceps_surae")
    ('GM', 'soleus', 'triceps surae')
    """
    info = registry("calf").structures.get(structure)
    if info and info.get("abbrev") and structure not in SPELLED_OUT:
        return str(info["abbrev"])
    return structure.replace("_", " ")


def evidence_line(findings: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """One line of the imaging evidence behind the findings, for the report's first screen: each affected muscle of
    the affected side (fat fraction against the other side's when it is fatty; volume asymmetry when it is enlarged),
    or, with no affected side, the first :data:`BILATERAL_SHOWN` muscles fatty on both sides with their fat fractions;
    then each spine level that agrees with it (DSCA and lateral recess depth on that side). Empty when there is none.

    >>> evidence_line({"territory_analysis": {"affected_side": "right", "status": {"right": {
    ...     "gastrocnemius_medial": {"fatty": True, "enlarged": False, "ff_pct": 82.0, "volume_ai_pct_vs_other": 15},
    ...     "soleus": {"fatty": False, "enlarged": True, "ff_pct": 4.0, "volume_ai_pct_vs_other": 25.0}}}},
    ...     "concordant_spine_findings": [{"level": "L4-L5", "side": "right", "dsca_mm2": 67.8,
    ...                                    "lateral_recess_depth_mm": 1.7}]},
    ...     {"calf.left.gastrocnemius_medial.ff_pct": 3.1})
    'right GM fat fraction 82 % vs 3 %; right soleus volume +25 % vs left; L4-L5 DSCA 68 mm², right recess 1.7 mm'
    >>> evidence_line({"territory_analysis": {"affected_side": None, "fatty_bilateral": ["gastrocnemius_medial"]}},
    ...               {"calf.right.gastrocnemius_medial.ff_pct": 42.4, "calf.left.gastrocnemius_medial.ff_pct": 42.5})
    'bilateral fatty change, fat fraction right / left: GM 42 / 42 %'
    """
    parts = []
    territory = findings.get("territory_analysis") or {}
    side = territory.get("affected_side")
    if side in ("left", "right"):
        other = "left" if side == "right" else "right"
        for muscle, st in (territory.get("status") or {}).get(side, {}).items():
            name = f"{side} {short_name(muscle)}"
            if st.get("fatty") and st.get("ff_pct") is not None:
                theirs = values.get(f"calf.{other}.{muscle}.ff_pct")
                parts.append(f"{name} fat fraction {st['ff_pct']:.0f} %"
                             + (f" vs {theirs:.0f} %" if isinstance(theirs, int | float) else ""))
            elif st.get("enlarged") and st.get("volume_ai_pct_vs_other") is not None:
                parts.append(f"{name} volume {st['volume_ai_pct_vs_other']:+.0f} % vs {other}")
    elif territory.get("fatty_bilateral"):
        ffs = [(short_name(m), values.get(f"calf.right.{m}.ff_pct"), values.get(f"calf.left.{m}.ff_pct"))
               for m in territory["fatty_bilateral"][:BILATERAL_SHOWN]]
        shown = [f"{n} {r:.0f} / {lf:.0f} %" for n, r, lf in ffs if isinstance(r, int | float)
                 and isinstance(lf, int | float)]
        if shown:
            more = len(territory["fatty_bilateral"]) - BILATERAL_SHOWN
            parts.append("bilateral fatty change, fat fraction right / left: " + ", ".join(shown)
                         + (f" and {more} more" if more > 0 else ""))
    for c in findings.get("concordant_spine_findings") or []:
        bits = [f"{c['level']} DSCA {c['dsca_mm2']:.0f} mm²" if c.get("dsca_mm2") is not None else c["level"]]
        if c.get("lateral_recess_depth_mm") is not None:
            bits.append(f"{c.get('side')} recess {c['lateral_recess_depth_mm']:.1f} mm")
        parts.append(", ".join(bits))
    return "; ".join(parts)


def render_study_report(study: StudyDir, muscles: Sequence[str], groups: Mapping[str, Sequence[str]],
                        report_cfg: Mapping[str, Any], qa_images: Sequence[Path], exports: Sequence[str] = ()) -> str:
    """The HTML text of ``report.html`` for the study folder ``study``."""
    series = _read_json(study.series_json)
    summary = _read_json(study.summary)
    findings = _read_json(study.findings)
    prov = _read_json(study.provenance)
    prov["configs"] = {k: v.get("sha256") if isinstance(v, dict) else v for k, v in prov.get("configs", {}).items()}
    values, missing = summary.get("values", {}), summary.get("missing", {})
    held = (findings.get("quality_control") or {}).get("held_back") or {}
    return _env().get_template("report.html.j2").render(
        study_name=study.root.name, series=series.get("series", []), skipped=series.get("skipped", []),
        calf_available=values.get("calf.available"), legs=values.get("calf.legs_present"),
        girth={k: values.get(k) for k in GIRTH_KEYS},
        girth_held=any(k in held for k in GIRTH_KEYS),
        calf_rows=calf_tables(values, missing, muscles, groups, report_cfg["asymmetry_flag_pct"],
                              report_cfg["ff_diff_flag_pp"]),
        asym_flag_pct=report_cfg["asymmetry_flag_pct"], ff_flag_pp=report_cfg["ff_diff_flag_pp"],
        spine_available=values.get("spine.available"), spine_rows=spine_rows(values),
        spine_method=values.get("spine.levels_method"), spine_conf=values.get("spine.levels_confidence"),
        spine_flags=values.get("spine.levels_flags"),
        spine_missing=missing.get("spine.levels_method") or next(
            (why for key, why in missing.items() if key.startswith("spine.")), "no lumbar series"),
        findings=findings, evidence=evidence_line(findings, values),
        images=[(p.stem.replace("_", " "), _png_data_uri(p)) for p in qa_images],
        provenance=prov, exports=list(exports), missing=missing,
    )


# --------------------------------------------------------------------------------------------------- cohort


def robust_outliers(values: Mapping[str, float], z: float, min_n: int) -> set[str]:
    """Names whose value lies more than ``z`` robust z-scores from the median: |x - median| / (1.4826 MAD) > z
    (Iglewicz & Hoaglin, How to Detect and Handle Outliers, ASQC 1993, modified z-score).

    >>> sorted(robust_outliers({"a": 1.0, "b": 1.1, "c": 0.9, "d": 1.0, "e": 9.0}, 3.5, 4))
    ['e']
    """
    if len(values) < min_n:
        return set()
    med = statistics.median(values.values())
    mad = statistics.median(abs(v - med) for v in values.values())
    if mad == 0:
        return {k for k, v in values.items() if v != med}
    return {k for k, v in values.items() if abs(v - med) / (1.4826 * mad) > z}


#: unit suffixes of summary keys and how a column header shows them
#: how a UCUM unit is shown in a column header (a fat-fraction difference in percentage points, "pp")
_SHOWN_UNITS = {"mm2": "mm²", "{grade}": "grade"}
#: metric name endings shown as words after the metric
_METRIC_WORDS = (("_ai", "AI"), ("_diff", "difference"))


def column_label(key: str) -> str:
    """A readable header for a summary key: side as R/L, muscles abbreviated, the unit in brackets.

    >>> column_label("calf.asymmetry.triceps_surae.volume_ai_pct")
    'triceps surae volume AI (%)'
    >>> column_label("calf.right.gastrocnemius_medial.ff_pct"), column_label("spine.L4-L5.dsca_mm2")
    ('R GM FF (%)', 'L4-L5 DSCA (mm²)')
    >>> column_label("calf.asymmetry.girth_diff_cm")
    'girth difference (cm)'
    """
    parts = key.split(".")[1:]
    words = []
    for part in parts[:-1]:
        if part == "asymmetry":
            continue
        words.append({"right": "R", "left": "L"}.get(part) or short_name(part))
    metric, unit = parts[-1], ""
    found = split_unit(metric)
    if found is not None:
        unit = "(pp)" if metric.endswith("_pp") else f"({_SHOWN_UNITS.get(found[1], found[1])})"
        metric = found[0]
    word = ""
    for ending, shown in _METRIC_WORDS:
        if metric.endswith(ending):
            metric, word = metric[: -len(ending)], shown
            break
    metric = {"ff": "FF", "dsca": "DSCA", "ap_diameter": "AP diameter"}.get(metric, metric.replace("_", " "))
    return " ".join(w for w in (*words, metric, word, unit) if w)


def cohort_table(root_out: Path, studies: Sequence[Mapping[str, Any]], columns: Sequence[str], z: float,
                 min_n: int) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Rows (one per study: name, status, error, decision, the calf and spine segmentation QC verdicts, the summary
    columns and ``held_back``: the columns whose value the rules held back because its segmentation failed QC,
    from ``findings.json``) and outliers per column, judged among the values that were not held back."""
    rows = []
    for st in studies:
        out = BatchDir(root_out).study(st["name"])
        measured = st["status"] in ("ok", "up to date")
        values = _read_json(out.summary).get("values", {}) if measured else {}
        findings = _read_json(out.findings) if measured else {}
        decision = findings.get("decision", {})
        held = (findings.get("quality_control") or {}).get("held_back") or {}
        row = {"study": st["name"], "status": st["status"], "error": st.get("error", ""),
               "decision": decision.get("statement") or decision.get("hypothesis") or "",
               "calf_qc": values.get("calf.qc_status"), "spine_qc": values.get("spine.qc_status"),
               "held_back": [c for c in columns if c in held and values.get(c) is not None]}
        for c in columns:
            row[c] = values.get(c)
        rows.append(row)
    outliers = {}
    for c in columns:
        vals = {r["study"]: float(r[c]) for r in rows
                if isinstance(r[c], (int, float)) and not isinstance(r[c], bool) and c not in r["held_back"]}
        outliers[c] = robust_outliers(vals, z, min_n)
    return rows, outliers


def write_cohort(root_out: Path, studies: Sequence[Mapping[str, Any]], report_cfg: Mapping[str, Any]) -> Path:
    """Write ``cohort.csv`` and ``index.html`` at the batch output root; returns the index path."""
    batch = BatchDir(root_out)
    columns = list(report_cfg["cohort_columns"])
    rows, outliers = cohort_table(root_out, studies, columns, report_cfg["outlier_robust_z"],
                                  report_cfg["outlier_min_studies"])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["study", "status", "error", "decision", "calf_qc", "spine_qc", *columns,
                                        "outlier_columns", "held_back_columns"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        flagged = [c for c in columns if r["study"] in outliers[c]]
        w.writerow({**{k: ("" if v is None else v) for k, v in r.items() if k != "held_back"},
                    "outlier_columns": ";".join(flagged), "held_back_columns": ";".join(r["held_back"])})
    write_text(batch.cohort_csv, buf.getvalue())
    html = _env().get_template("index.html.j2").render(
        rows=rows, columns=columns, labels={c: column_label(c) for c in columns}, outliers=outliers,
        n_failed=sum(r["status"] == "failed" for r in rows), n_not_run=sum(r["status"] == "not run" for r in rows),
        has_report={r["study"]: r["status"] in ("ok", "up to date") and batch.study(r["study"]).report_html.exists()
                    for r in rows})
    return write_text(batch.index_html, html)
