"""The report stage on the index-case sample study (ground-truth labels in place of a segmentation): QA pictures,
a self-contained report.html with the saved values, DICOM SEG/SR; no patient name or ID unless asked for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from pipeline.workflow import stages
from tests.report.study_fixture import ground_truth_out


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    o = ground_truth_out(tmp_path_factory.mktemp("report") / "nmh")
    assert stages.report(o) == 0
    return o


def test_pictures_and_exports(out: Path):
    names = {p.name for p in (out / "qa").glob("*.png")}
    assert {"calf_montage.png", "calf_ff.png", "calf_csa_along_z.png", "spine_sagittal.png",
            "spine_axial_L4-L5.png"} <= names
    for p in (out / "qa").glob("*.png"):
        assert Image.open(p).format == "PNG"
    assert (out / "calf" / "seg.dcm").exists() and (out / "measurements_sr.dcm").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert "report" in prov["stages"]


def test_report_html_shows_saved_values_and_is_self_contained(out: Path):
    html = (out / "report.html").read_text()
    values = json.loads((out / "summary.json").read_text())["values"]
    findings = json.loads((out / "findings.json").read_text())
    assert f"{values['spine.L4-L5.dsca_mm2']:.0f}" in html
    assert f"{values['calf.asymmetry.triceps_surae.volume_ai_pct']:.1f}" in html
    assert findings["decision"].get("statement", findings["decision"]["status"]) in html
    for rule in findings["fired_rules"]:
        assert rule["id"] in html
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r'<img[^>]+src="(?!data:)', html), "images must be embedded"
    assert 'class="flag"' in html  # the index case is asymmetric
    patient = json.loads((out / "series.json").read_text())["patient"]
    assert patient["PatientName"] not in html and patient["PatientID"] not in html
