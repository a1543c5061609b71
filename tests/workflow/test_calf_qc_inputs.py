"""Calf QC through the pipeline: inputs that are not calves, given as calf images, fail QC and the rules decide
nothing from their calf values, and their measurement tables mark every row failed (segment, measure and rules stages
with the shipped calf bundle)."""

from __future__ import annotations

import csv
import json

import pytest

from pipeline.core.layout import StudyDir
from pipeline.synth.not_calf import write_not_calf_study
from tests.report.study_fixture import through_rules


@pytest.mark.parametrize("kind", ["thigh", "foot", "empty", "noise"])
def test_not_a_calf_fails_qc(kind, tmp_path):
    study = write_not_calf_study(kind, 11, tmp_path / "study", n_slices=10, in_plane_mm=1.6)
    out = through_rules(study, tmp_path / "out")
    d = StudyDir(out)
    values = json.loads(d.summary.read_text())["values"]
    assert values["calf.qc_status"] == "fail", values.get("calf.qc_reasons")
    if values.get("calf.available") is False:  # no usable leg: no calf values at all, the reason says why
        assert all(values.get(f"calf.{s}.soleus.volume_ml") is None for s in ("left", "right"))
        assert "no usable leg" in values["calf.qc_reasons"]
        return
    assert values["calf.qc_reasons"]
    findings = json.loads(d.findings.read_text())
    held = findings["quality_control"]["held_back"]
    assert all(v is None or k in held for k, v in values.items()
               if k.startswith("calf.") and k.endswith(("volume_ml", "ff_pct", "girth_max_mm")))
    # the tables say the same: every structure's and group's row fails with the study (the outline's has no verdict)
    measured = list(csv.DictReader(d.calf_measurements.open()))
    assert measured
    for r in measured + list(csv.DictReader(d.calf_asymmetry.open())):  # one leg: no asymmetry rows
        assert r["structure"] == "leg" or r["qc_status"] == "fail", r
    for table in (d.calf_slices, d.calf_legs):
        assert {r["qc_status"] for r in csv.DictReader(table.open())} <= {"fail"}, table.name
