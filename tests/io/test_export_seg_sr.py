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


def _dciodvfy_lines(path: Path, kind: str) -> list[str]:
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith(kind)]


def _dciodvfy_errors(path: Path) -> list[str]:
    return _dciodvfy_lines(path, "Error")


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
    by_label = {d.SegmentLabel: d.SegmentedPropertyTypeCodeSequence[0] for d in seg.SegmentSequence}
    gm = by_label["gastrocnemius_medial_right"]
    assert (gm.CodeValue, gm.CodingSchemeDesignator, gm.CodeMeaning) == (
        "7:928", "MDC", "Musculus gastrocnemius Caput mediale")
    assert by_label["soleus_left"].CodeValue == "7:932" and by_label["tibia_left"].CodeValue == "12611008"
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


def _read_item(g: dict, it: pydicom.Dataset) -> None:
    """Put one content item of a measurement group into ``g`` (see :func:`_sr_groups`)."""
    name = it.ConceptNameCodeSequence[0].CodeMeaning
    if it.ValueType == "TEXT" and name == "Tracking Identifier":
        g["id"] = it.TextValue
    elif it.ValueType == "UIDREF" and name == "Tracking Unique Identifier":
        g["uid"] = it.UID
    elif it.ValueType == "CODE" and name == "Finding Site":
        lat = [c.ConceptCodeSequence[0].CodeMeaning for c in it.get("ContentSequence", [])]
        g["site"] = (it.ConceptCodeSequence[0].CodeValue, lat[0] if lat else None)
    elif it.ValueType == "CODE" and name not in ("Finding", "Finding Category"):
        g["numbers"][name] = (it.ConceptCodeSequence[0].CodeMeaning, it.ConceptCodeSequence[0].CodeValue)
    elif it.ValueType == "IMAGE" and name == "Referenced Segment":
        g["segment"] = int(it.ReferencedSOPSequence[0].ReferencedSegmentNumber)
    elif it.ValueType == "NUM":
        mods = {c.ConceptNameCodeSequence[0].CodeMeaning: c.ConceptCodeSequence[0].CodeMeaning
                for c in it.get("ContentSequence", []) if c.ValueType == "CODE"}
        mv = it.MeasuredValueSequence[0]
        key = (name + (f" [{mods['Derivation']}]" if "Derivation" in mods else "")
               + (f" of {mods['Finding Site']}" if "Finding Site" in mods else ""))
        g["numbers"][key] = (
            float(mv.NumericValue), mv.MeasurementUnitsCodeSequence[0].CodeValue,
            it.ConceptNameCodeSequence[0].CodingSchemeDesignator)


def _sr_groups(ds: pydicom.Dataset) -> dict[str, dict]:
    """Tracking identifier -> the group's numbers and coded evaluations (concept meaning [derivation] -> (value,
    unit, scheme) or (meaning, code)), finding site (code, laterality), tracking UID and referenced segment number,
    read back from an SR."""
    out: dict[str, dict] = {}

    def walk(items) -> None:
        for it in items:
            if it.get("ValueType") == "CONTAINER" and it.ConceptNameCodeSequence[0].CodeMeaning == "Measurement Group":
                g: dict = {"numbers": {}, "site": None, "uid": None, "segment": None}
                for sub in it.ContentSequence:
                    _read_item(g, sub)
                out[g["id"]] = g
            elif "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    return out


def test_sr_uses_standard_concepts_sites_with_laterality_and_stable_tracking(out: Path, tmp_path: Path):
    values = {"calf.right.soleus.volume_ml": 412.5, "calf.left.soleus.ff_pct": 6.25,
              "calf.left.soleus.lean_volume_ml": 380.0, "calf.left.soleus.fat_volume_ml": 26.0,
              "calf.left.soleus.ff_p10_pct": 2.5, "calf.left.soleus.ff_p90_pct": 11.0,
              "calf.left.soleus.matched_csa_mm2": 1500.0, "calf.right.girth_max_mm": 402.0,
              "calf.asymmetry.soleus.volume_ai_pct": 12.0, "calf.asymmetry.girth_diff_cm": 0.4,
              "spine.L4-L5.dsca_mm2": 61.0, "spine.L4-L5.right.lateral_recess_depth_mm": 1.7,
              "calf.available": True, "spine.L4-L5.central_grade": "absolute", "spine.L4-L5.canal_rsna": "severe",
              "spine.L3-L4.left.foraminal_rsna": "normal_mild"}
    assert set(sr_groups(values)) == {("calf", "soleus_right"), ("calf", "soleus_left"), ("calf", "leg_right"),
                                      ("calf", "soleus_asymmetry"), ("calf", "leg_asymmetry"), ("spine", "L4-L5"),
                                      ("spine", "L4-L5_right")}
    src = _source(out)
    seg = write_seg(load_volume(out / "calf" / "labels.nii.gz"), src["files"], registry("calf"), tmp_path / "s.dcm")
    first = _sr_groups(pydicom.dcmread(write_sr(values, src["files"][:1], tmp_path / "sr.dcm", segs=[seg])))
    again = _sr_groups(pydicom.dcmread(write_sr(values, src["files"][:1], tmp_path / "sr2.dcm")))
    assert first["soleus_right"]["numbers"] == {"Volume": (412.5, "mL", "SCT")}
    assert first["soleus_right"]["site"] == ("7:932", "Right")
    assert first["soleus_left"]["numbers"]["Fat fraction [Mean]"] == (6.25, "%", "DCM")
    assert first["soleus_left"]["numbers"]["Volume of Muscle"] == (380.0, "mL", "SCT")
    assert first["soleus_left"]["numbers"]["Volume of Fat"] == (26.0, "mL", "SCT")
    assert first["soleus_left"]["numbers"]["Fat fraction [Tenth percentile (qualifier value)]"] == (2.5, "%", "DCM")
    assert first["soleus_left"]["numbers"]["Fat fraction [Ninetieth percentile (qualifier value)]"] == (
        11.0, "%", "DCM")
    assert first["soleus_left"]["numbers"]["matched_csa_mm2"] == (1500.0, "mm2", "99LEGMRI")
    assert first["leg_right"]["numbers"] == {"Circumference [Maximum]": (402.0, "mm", "SCT")}
    assert first["leg_right"]["site"] == ("30021000", "Right")
    assert first["soleus_asymmetry"]["site"] == ("7:932", None)
    assert first["leg_asymmetry"]["numbers"]["girth_diff_cm"] == (0.4, "cm", "99LEGMRI")
    assert first["L4-L5"]["numbers"] == {"Area": (61.0, "mm2", "SCT"), "canal_rsna": ("Severe", "24484000")}
    assert first["L4-L5"]["site"] == ("84020006", None)
    assert first["L3-L4_left"]["numbers"] == {"foraminal_rsna": ("Normal or mild", "NORMAL_MILD")}
    assert first["L3-L4_left"]["site"] == ("62551000", "Left")
    assert first["L4-L5_right"]["numbers"] == {"Depth": (1.7, "mm", "SCT")}
    assert first["L4-L5_right"]["site"] == ("84020006", "Right")
    # the same structure keeps its tracking UID from one export to the next; different structures differ
    assert {k: g["uid"] for k, g in first.items()} == {k: g["uid"] for k, g in again.items()}
    assert len({g["uid"] for g in first.values()}) == len(first)
    # the muscle group points at its SEG segment
    labels = {int(d.SegmentNumber): d.SegmentLabel for d in hd.seg.segread(seg).SegmentSequence}
    assert labels[first["soleus_right"]["segment"]] == "soleus_right" and again["soleus_right"]["segment"] is None


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_seg_and_sr_pass_dciodvfy(out: Path, tmp_path: Path):
    src = _source(out)
    seg = write_seg(load_volume(out / "calf" / "labels.nii.gz"), src["files"], registry("calf"), tmp_path / "s.dcm")
    sr = write_sr({"calf.right.soleus.volume_ml": 400.0, "spine.L4-L5.dsca_mm2": 61.0}, src["files"][:1],
                  tmp_path / "sr.dcm", segs=[seg])
    assert _dciodvfy_errors(seg) == []
    assert _dciodvfy_errors(sr) == []


def test_sr_groups_carry_their_qc_verdict_and_the_report_its_decision_and_qc_texts(out: Path, tmp_path: Path):
    """Each measurement group has a "Quality Assessment" evaluation with the DICOM QC-standard value of the verdict it
    rests on (a muscle group and an asymmetry: the worst of their members' and legs'); a leg's girth has none. The
    report's "Qualitative Evaluations" container holds the QC texts and the decision as "Impression"."""
    values = {"calf.right.soleus.volume_ml": 412.5, "calf.left.soleus.volume_ml": 380.0,
              "calf.right.triceps_surae.volume_ml": 900.0, "calf.asymmetry.soleus.volume_ai_pct": 8.2,
              "calf.right.girth_max_mm": 402.0, "spine.L4-L5.dsca_mm2": 61.0,
              "spine.L4-L5.right.lateral_recess_depth_mm": 1.7,
              "calf.right.soleus.qc_status": "fail", "calf.left.soleus.qc_status": "pass",
              "calf.right.gastrocnemius_medial.qc_status": "pass", "calf.right.gastrocnemius_lateral.qc_status": "pass",
              "spine.L4-L5.qc_status": "review"}
    qc_texts = ["calf segmentation quality control: fail: right leg: soleus in pieces"]
    impression = "not evaluable (not evaluable: none of the rules could be evaluated)."
    path = write_sr(values, _source(out)["files"][:1], tmp_path / "sr.dcm", impression=impression, qc_texts=qc_texts)
    ds = pydicom.dcmread(path)
    groups = _sr_groups(ds)
    qa = {k: g["numbers"].get("Quality Assessment", (None, None))[1] for k, g in groups.items()}
    assert qa == {"soleus_right": "111235", "soleus_left": "111237", "triceps_surae_right": "111235",
                  "soleus_asymmetry": "111235", "leg_right": None, "L4-L5": "111236", "L4-L5_right": "111236"}
    container = [it for it in ds.ContentSequence
                 if it.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert len(container) == 1
    texts = [(it.ConceptNameCodeSequence[0].CodeMeaning, it.TextValue) for it in container[0].ContentSequence]
    assert texts == [("Quality Assessment", qc_texts[0]), ("Impression", impression)]
    assert hd.sr.srread(path).content is not None
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(path) == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_sr_of_metrics_with_standard_concepts_has_no_dciodvfy_warning(out: Path, tmp_path: Path):
    """Volumes (whole, lean, fat), areas, fat-fraction statistics, girth, canal sizes, the QC verdicts and the report
    texts carry PS3.16 concepts, so dciodvfy has nothing to warn about; a project-specific metric (an asymmetry
    index) is the one private code."""
    side = "calf.left.soleus."
    values = {side + "volume_ml": 400.0, side + "lean_volume_ml": 380.0, side + "fat_volume_ml": 20.0,
              side + "max_csa_mm2": 1900.0, side + "ff_pct": 5.0, side + "ff_median_pct": 4.5,
              side + "ff_p10_pct": 2.0, side + "ff_p90_pct": 9.0, "calf.left.girth_max_mm": 380.0,
              "spine.L4-L5.dsca_mm2": 61.0, "spine.L4-L5.ap_diameter_mm": 9.0,
              "spine.L4-L5.right.lateral_recess_depth_mm": 1.7, "calf.left.soleus.qc_status": "pass",
              "spine.L4-L5.qc_status": "review"}
    src = _source(out)
    standard = write_sr(values, src["files"][:1], tmp_path / "sr.dcm", impression="decided.",
                        qc_texts=["calf segmentation quality control: pass"])
    assert _dciodvfy_lines(standard, "Error") == []
    assert _dciodvfy_lines(standard, "Warning") == []
    private = write_sr({**values, "calf.asymmetry.soleus.volume_ai_pct": 5.0}, src["files"][:1], tmp_path / "p.dcm")
    assert len([ln for ln in _dciodvfy_lines(private, "Warning") if "99LEGMRI" in ln]) == 2  # item + scheme list


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
             "sr": write_sr(values, src["files"][:1], tmp_path / "sr.dcm")}
    clean = {"seg": write_seg(labels, src["files"], registry("calf"), tmp_path / "s_d.dcm", deidentified=True),
             "sr": write_sr(values, src["files"][:1], tmp_path / "sr_d.dcm", deidentified=True)}
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
        "Volume": 412.5, "Area": 61.0}


def _numbers(ds: pydicom.Dataset) -> dict[str, float]:
    found: dict[str, float] = {}

    def visit(_: pydicom.Dataset, el: pydicom.DataElement) -> None:
        if el.keyword == "ContentSequence":
            for it in el.value:
                if it.get("ValueType") == "NUM":
                    found[it.ConceptNameCodeSequence[0].CodeMeaning] = float(it.MeasuredValueSequence[0].NumericValue)

    ds.walk(visit)
    return found
