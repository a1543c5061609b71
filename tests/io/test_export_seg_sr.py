"""DICOM SEG and SR export: the SEG segments reproduce the label map voxel for voxel on the source images and
reference them; the SR carries the summary numbers with UCUM units; both pass dciodvfy without errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.core.labels import registry
from pipeline.io.export import sr_groups, write_seg, write_sr
from pipeline.io.nifti import load_volume
from tests.report.study_fixture import ground_truth_out


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return ground_truth_out(tmp_path_factory.mktemp("export") / "nmh", measure=False)


def _source(out: Path) -> dict:
    index = json.loads((out / "series.json").read_text())
    return next(s for s in index["series"] if s["role"] == "calf_water")


def _dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


def test_seg_segments_match_label_map_and_reference_source(out: Path, tmp_path: Path):
    labels = load_volume(out / "calf" / "labels.nii.gz")
    src = _source(out)
    path = write_seg(labels, src["files"], registry("calf"), tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    names = {int(d.SegmentNumber): d.SegmentLabel for d in seg.SegmentSequence}
    reg = registry("calf")
    assert set(names.values()) == {reg.by_id()[i].name for i in np.unique(labels.array) if i}
    refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs <= set(src["sop_instance_uids"]) and refs
    # voxel counts per segment equal the label map's (the source grid is the label grid here)
    arr = seg.get_volume(combine_segments=False) if hasattr(seg, "get_volume") else None
    for num, name in names.items():
        n_label = int((labels.array == reg.label_id(name)).sum())
        if arr is not None:
            n_seg = int((arr.array[..., num - 1] > 0).sum())
        else:  # pragma: no cover - older highdicom
            n_seg = int(seg.get_pixels_by_source_instance(src["sop_instance_uids"], segment_numbers=[num],
                                                          ignore_spatial_locations=True).sum())
        assert n_seg == n_label, name
    laterality = {d.SegmentLabel: d.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeMeaning
                  for d in seg.SegmentSequence if "AnatomicRegionModifierSequence" in d.AnatomicRegionSequence[0]}
    assert laterality["soleus_right"] == "Right" and laterality["soleus_left"] == "Left"



def test_spine_seg_codes_each_level_and_reproduces_the_sagittal_label_map(out: Path, tmp_path: Path):
    """The spine SEG on the sagittal T2 series: one segment per label present, each disc and vertebra with its
    level's SNOMED CT concept, the lumbar spine as region, the registry's colour, and the label map's voxel counts."""
    labels = load_volume(out / "spine" / "labels_sag.nii.gz")
    index = json.loads((out / "series.json").read_text())
    src = next(s for s in index["series"] if s["role"] == "lumbar_sag_t2")
    reg = registry("spine")
    seg = hd.seg.segread(write_seg(labels, src["files"], reg, tmp_path / "spine_seg.dcm"))
    by_label = {d.SegmentLabel: d for d in seg.SegmentSequence}
    assert set(by_label) == {reg.by_id()[i].name for i in np.unique(labels.array) if i}
    assert by_label["disc_L4_L5"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "84020006"
    assert by_label["disc_L5_S1"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "715056000"
    assert by_label["vertebral_body_L4"].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "L4 vertebra"
    assert {d.AnatomicRegionSequence[0].CodeValue for d in by_label.values()} == {"122496007"}
    lab_l4 = hd.color.CIELabColor.from_string(reg.by_id()[reg.label_id("vertebral_body_L4")].color).value
    assert tuple(by_label["vertebral_body_L4"].RecommendedDisplayCIELabValue) == tuple(lab_l4)
    arr = seg.get_volume(combine_segments=False).array
    for d in seg.SegmentSequence:
        n_label = int((np.asarray(labels.array) == reg.label_id(d.SegmentLabel)).sum())
        assert int((arr[..., int(d.SegmentNumber) - 1] > 0).sum()) == n_label, d.SegmentLabel
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(tmp_path / "spine_seg.dcm") == []

def test_sr_holds_measurements_with_units(out: Path, tmp_path: Path):
    values = {"calf.right.soleus.volume_ml": 412.5, "calf.left.soleus.ff_pct": 6.25,
              "spine.L4-L5.dsca_mm2": 61.0, "spine.L4-L5.right.lateral_recess_depth_mm": 1.7,
              "calf.available": True, "spine.L4-L5.central_grade": "absolute"}
    assert set(sr_groups(values)) == {("calf", "soleus_right"), ("calf", "soleus_left"), ("spine", "L4-L5"),
                                      ("spine", "L4-L5_right")}
    path = write_sr(values, _source(out)["files"], None, tmp_path / "sr.dcm")
    ds = pydicom.dcmread(path)
    found = {}

    def walk(items):
        for it in items:
            if it.get("ValueType") == "NUM":
                mv = it.MeasuredValueSequence[0]
                found[it.ConceptNameCodeSequence[0].CodeMeaning] = (
                    float(mv.NumericValue), mv.MeasurementUnitsCodeSequence[0].CodeValue)
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    assert found["soleus_right volume_ml"] == (412.5, "ml")
    assert found["soleus_left ff_pct"] == (6.25, "%")
    assert found["L4-L5 dsca_mm2"] == (61.0, "mm2")
    assert found["L4-L5_right lateral_recess_depth_mm"] == (1.7, "mm")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_seg_and_sr_pass_dciodvfy(out: Path, tmp_path: Path):
    src = _source(out)
    seg = write_seg(load_volume(out / "calf" / "labels.nii.gz"), src["files"], registry("calf"), tmp_path / "s.dcm")
    sr = write_sr({"calf.right.soleus.volume_ml": 400.0, "spine.L4-L5.dsca_mm2": 61.0}, src["files"], None,
                  tmp_path / "sr.dcm")
    assert _dciodvfy_errors(seg) == []
    assert _dciodvfy_errors(sr) == []


def _strings(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()
    ds.walk(lambda _, el: found.add(str(el.value)) if el.VR in ("PN", "LO", "SH", "DA", "TM", "DT", "CS") else None)
    return found


def test_deidentified_seg_and_sr_keep_the_measurements_and_references_and_drop_the_patient(out: Path,
                                                                                       tmp_path: Path):
    """--deidentify (PS3.15 basic profile, Retain UIDs and Clean Structured Content options): no name, ID, birth
    date, accession number or study date of the source left; the same segments, source references and measured
    values as without it; highdicom reads both back; dciodvfy finds no error."""
    src = _source(out)
    head = pydicom.dcmread(src["files"][0], stop_before_pixels=True)
    identifying = {str(head.PatientName), head.PatientID, head.PatientBirthDate, head.AccessionNumber, head.StudyDate}
    assert all(identifying)
    labels = load_volume(out / "calf" / "labels.nii.gz")
    values = {"calf.right.soleus.volume_ml": 412.5, "spine.L4-L5.dsca_mm2": 61.0}
    plain = {"seg": write_seg(labels, src["files"], registry("calf"), tmp_path / "s.dcm"),
             "sr": write_sr(values, src["files"], None, tmp_path / "sr.dcm")}
    clean = {"seg": write_seg(labels, src["files"], registry("calf"), tmp_path / "s_d.dcm", deidentified=True),
             "sr": write_sr(values, src["files"], None, tmp_path / "sr_d.dcm", deidentified=True)}
    for kind in ("seg", "sr"):
        a, b = pydicom.dcmread(plain[kind]), pydicom.dcmread(clean[kind])
        assert identifying <= _strings(a)  # the plain export carries the patient module, as DICOM requires
        assert not identifying & _strings(b)
        assert b.PatientIdentityRemoved == "YES"
        methods = {m.CodeValue for m in b.DeidentificationMethodCodeSequence}
        assert {"113100", "113110"} <= methods and ("113104" in methods) == (kind == "sr")
        assert (a.StudyInstanceUID, a.SOPClassUID) == (b.StudyInstanceUID, b.SOPClassUID)
        if shutil.which("dciodvfy"):
            assert _dciodvfy_errors(clean[kind]) == []
    seg_a, seg_b = hd.seg.segread(plain["seg"]), hd.seg.segread(clean["seg"])
    assert [d.SegmentLabel for d in seg_a.SegmentSequence] == [d.SegmentLabel for d in seg_b.SegmentSequence]
    assert (seg_a.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
            == seg_b.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
    assert np.array_equal(seg_a.pixel_array, seg_b.pixel_array)
    hd.sr.srread(clean["sr"])
    assert _numbers(pydicom.dcmread(plain["sr"])) == _numbers(pydicom.dcmread(clean["sr"])) == {
        "soleus_right volume_ml": 412.5, "L4-L5 dsca_mm2": 61.0}


def _numbers(ds: pydicom.Dataset) -> dict[str, float]:
    found: dict[str, float] = {}

    def visit(_: pydicom.Dataset, el: pydicom.DataElement) -> None:
        if el.keyword == "ContentSequence":
            for it in el.value:
                if it.get("ValueType") == "NUM":
                    found[it.ConceptNameCodeSequence[0].CodeMeaning] = float(it.MeasuredValueSequence[0].NumericValue)

    ds.walk(visit)
    return found
