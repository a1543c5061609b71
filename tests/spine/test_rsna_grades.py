"""Spine grades in the RSNA 2024 vocabulary (normal_mild / moderate / severe) from the measurements, on the index
case with its ground-truth labels: in summary.json and spine/measurements.csv, consistent with the configured
bounds, and null with the measurement's reason where the measurement is null."""

from __future__ import annotations

import csv
import json

from pipeline.core.config import load_config
from pipeline.spine.measure import rsna_grade
from tests.report.study_fixture import ground_truth_out


def test_rsna_grades_follow_the_measurements(tmp_path):
    out = ground_truth_out(tmp_path / "nmh")
    s = json.loads((out / "summary.json").read_text())
    values, missing = s["values"], s["missing"]
    bounds = load_config("default")["spine"]["rsna"]
    assert values["spine.L4-L5.canal_rsna"] == "severe"  # DSCA 68 mm2, below Schonstrom's absolute 75 mm2
    assert values["spine.L4-L5.right.subarticular_rsna"] == "severe"  # right recess 1.7 mm
    assert values["spine.L4-L5.left.subarticular_rsna"] == "normal_mild"
    n = 0
    for key, value in values.items():
        for grade, measure, bound in (("canal_rsna", "dsca_mm2", "canal_dsca_mm2"),
                                      ("subarticular_rsna", "lateral_recess_depth_mm", "subarticular_recess_depth_mm"),
                                      ("foraminal_rsna", "foramen_area_mm2", "foraminal_area_mm2")):
            if key.endswith(grade):
                m = values.get(key.replace(grade, measure))
                assert value == rsna_grade(m, *bounds[bound]), key
                if value is None:
                    assert missing[key]
                n += 1
    assert n >= 25
    rows = list(csv.DictReader(open(out / "spine" / "measurements.csv")))
    dsca = [r for r in rows if r["level"] == "L4-L5" and r["metric"] == "dsca_mm2"]
    assert dsca and dsca[0]["grade_rsna"] == "severe"


def test_the_report_shows_the_rsna_grades(tmp_path):
    from pipeline.workflow import stages

    out = ground_truth_out(tmp_path / "nmh")
    assert stages.report(out) == 0
    html = (out / "report.html").read_text()
    assert "RSNA 2024" in html and '<td class="l">L4-L5</td><td class="l flag">severe</td>' in html
