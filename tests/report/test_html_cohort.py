"""report.html and the cohort index read the saved JSON: values, flags, failed studies and outliers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.report.html import calf_tables, robust_outliers, write_cohort


def test_asymmetry_flags_follow_the_configured_limit():
    cfg = load_config("report")
    values = {"calf.right.soleus.volume_ml": 420.0, "calf.left.soleus.volume_ml": 350.0,
              "calf.asymmetry.soleus.volume_ai_pct": 18.2, "calf.asymmetry.soleus.ff_diff_pp": 1.0,
              "calf.right.tibialis_anterior.volume_ml": 100.0,
              "calf.asymmetry.tibialis_anterior.volume_ai_pct": cfg["asymmetry_flag_pct"] - 0.1}
    rows = {r["name"]: r for r in calf_tables(values, {}, ["soleus", "tibialis_anterior"], {},
                                              cfg["asymmetry_flag_pct"], cfg["ff_diff_flag_pp"])}
    assert rows["soleus"]["flags"] == ["volume_ai_pct"]
    assert rows["tibialis_anterior"]["flags"] == []
    assert rows["soleus"]["right"]["volume_ml"] == 420.0


def test_robust_outliers_needs_enough_studies():
    vals = {"a": 10.0, "b": 11.0, "c": 9.0, "d": 10.5, "e": 40.0}
    assert robust_outliers(vals, 3.5, 4) == {"e"}
    assert robust_outliers({k: vals[k] for k in "abe"}, 3.5, 4) == set()


def _study(root: Path, name: str, volume_ai: float, calf_qc: str = "pass") -> None:
    """A measured study folder; a calf QC fail holds its calf values back from the rules, as findings.json says."""
    d = root / name
    d.mkdir(parents=True)
    key = "calf.asymmetry.triceps_surae.volume_ai_pct"
    (d / "summary.json").write_text(json.dumps({"values": {key: volume_ai, "calf.qc_status": calf_qc,
                                                           "spine.qc_status": "pass"}, "missing": {}}))
    held = {key: "calf segmentation failed QC"} if calf_qc == "fail" else {}
    (d / "findings.json").write_text(json.dumps({"decision": {"statement": f"decision {name}"},
                                                 "quality_control": {"held_back": held}}))
    (d / "report.html").write_text("<html></html>")


def test_cohort_index_links_studies_flags_failed_and_outliers(tmp_path):
    for i, ai in enumerate([2.0, 3.0, 2.5, 1.5, 45.0]):
        _study(tmp_path, f"s{i}", ai)
    (tmp_path / "broken").mkdir()
    studies = [{"name": f"s{i}", "status": "ok"} for i in range(5)]
    studies.append({"name": "broken", "status": "failed", "error": "bad input: no DICOM image series found"})
    index = write_cohort(tmp_path, studies, load_config("report"))
    html = index.read_text()
    for i in range(5):
        assert f'href="./s{i}/report.html"' in html
    assert "1 failed" in html and "broken/error.log" in html and "no DICOM image series found" in html
    rows = {r["study"]: r for r in csv.DictReader(open(tmp_path / "cohort.csv"))}
    assert rows["s4"]["outlier_columns"] == "calf.asymmetry.triceps_surae.volume_ai_pct"
    assert rows["s0"]["outlier_columns"] == ""
    assert rows["broken"]["status"] == "failed"
    assert rows["s1"]["decision"] == "decision s1"


def test_cohort_index_reads_like_a_table_for_people(tmp_path):
    """Readable column headers (the summary key in the title), studies counted apart from the folder's other
    entries (listed last), numeric cells carry their value for sorting, and a sort script is embedded."""
    for i, ai in enumerate([2.0, 3.0]):
        _study(tmp_path, f"s{i}", ai)
    studies = [{"name": "notes.txt", "status": "not run", "error": "a file, not a study folder"},
               *({"name": f"s{i}", "status": "ok"} for i in range(2))]
    html = write_cohort(tmp_path, studies, load_config("report")).read_text()
    assert '<th class="sort" title="calf.asymmetry.triceps_surae.volume_ai_pct">triceps surae volume AI (%)</th>' in html
    assert ">calf.right.gastrocnemius_medial.ff_pct<" not in html and ">R GM FF (%)<" in html
    assert "legmri cohort: 2 studies" in html and "1 other entry" in html
    assert html.index("notes.txt") > html.index('href="./s1/report.html"')
    assert 'data-v="3.0"' in html and "querySelectorAll(\"#cohort th.sort\")" in html


def test_cohort_values_whose_segmentation_failed_qc_are_marked_and_kept_out_of_the_outlier_statistics(tmp_path):
    """A study whose calf QC failed: its QC verdict is a column, its held-back value is listed in held_back_columns and
    struck through in the index, and it is neither flagged as an outlier nor counted in the others' statistics."""
    key = "calf.asymmetry.triceps_surae.volume_ai_pct"
    for i, ai in enumerate([2.0, 3.0, 2.5, 1.5]):
        _study(tmp_path, f"s{i}", ai)
    _study(tmp_path, "failed_qc", 45.0, calf_qc="fail")
    studies = [{"name": f"s{i}", "status": "ok"} for i in range(4)] + [{"name": "failed_qc", "status": "ok"}]
    html = write_cohort(tmp_path, studies, load_config("report")).read_text()
    rows = {r["study"]: r for r in csv.DictReader(open(tmp_path / "cohort.csv"))}
    assert rows["failed_qc"]["calf_qc"] == "fail" and rows["s0"]["calf_qc"] == "pass"
    assert rows["failed_qc"]["held_back_columns"] == key and rows["s0"]["held_back_columns"] == ""
    assert rows["failed_qc"][key] == "45.0" and rows["failed_qc"]["outlier_columns"] == ""
    assert '<td class="num qc-failed" data-v="45.0">' in html and '<span class="qcv-fail">fail</span>' in html
