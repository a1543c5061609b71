"""Inputs that used to give confident wrong numbers with exit 0: water and fat images swapped, a lone water or fat
image, a calf series of three slices. The run ends (exit 0) and says what it could not trust: no fat fraction from
swapped images, a review when the Dixon source changed, a QC failure when the coverage is too short."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import pytest

from pipeline.cli import main
from tests.badinput.corpus import NIFTI_ROLES, clean_yaml, entry
from tests.badinput.test_corpus import bases  # noqa: F401  (fixture)


def _run(study, out) -> dict:
    assert main(["run", str(study), "--out", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_water_and_fat_labelled_the_wrong_way_round_are_swapped_back_and_said(bases, tmp_path):  # noqa: F811
    clean = _run(bases["nifti"], tmp_path / "clean")["values"]
    assert "wrong way round" not in clean["calf.qc_reasons"]
    study = tmp_path / "study"
    shutil.copytree(bases["nifti"], study)
    (study / "study.yaml").write_text(clean_yaml().replace("role: calf_water", "role: TMP")
                                      .replace("role: calf_fat", "role: calf_water").replace("role: TMP", "role: calf_fat"))
    values = _run(study, tmp_path / "out")["values"]
    assert "wrong way round" in values["calf.qc_reasons"] and values["calf.qc_status"] != "pass"
    for side in ("left", "right"):
        for m in ("soleus", "gastrocnemius_medial"):
            key = f"calf.{side}.{m}.ff_pct"
            assert values[key] == pytest.approx(clean[key], abs=0.5)


def test_images_that_are_not_a_water_fat_pair_give_no_fat_fraction(bases, tmp_path):  # noqa: F811
    """The water image given again as the fat image: the subcutaneous ring reads 50 %, neither fat nor swapped."""
    study = tmp_path / "study"
    shutil.copytree(bases["nifti"], study)
    shutil.copy(study / "calf_water.nii.gz", study / "calf_fat.nii.gz")
    s = _run(study, tmp_path / "out")
    values, missing = s["values"], s["missing"]
    ff = [k for k in values if k.startswith("calf.") and k.endswith(".ff_pct")]
    assert ff and all(values[k] is None and "withheld" in missing[k] for k in ff)
    assert values["calf.qc_status"] != "pass" and "withheld" in values["calf.qc_reasons"]


def test_a_lone_scanner_water_image_is_said(bases, tmp_path):  # noqa: F811
    study = tmp_path / "study"
    shutil.copytree(bases["nifti"], study)
    (study / "calf_fat.nii.gz").unlink()
    (study / "study.yaml").write_text("series:\n" + "".join(entry(r, f"{r}.nii.gz") for r in NIFTI_ROLES
                                                            if r != "calf_fat"))
    values = _run(study, tmp_path / "out")["values"]
    assert "without its partner" in values["calf.qc_reasons"] and values["calf.qc_status"] != "pass"


@pytest.mark.parametrize("n_slices", [3])
def test_a_calf_of_three_slices_fails_qc(bases, tmp_path, n_slices):  # noqa: F811
    study = tmp_path / "study"
    shutil.copytree(bases["nifti"], study)
    for role in NIFTI_ROLES:
        p = study / f"{role}.nii.gz"
        img = nib.load(p)
        nib.save(img.slicer[:, :, 12:12 + n_slices], p)
    values = _run(study, tmp_path / "out")["values"]
    assert values["calf.qc_status"] == "fail"


def test_a_repeated_series_is_said_and_the_choice_named(bases, tmp_path):  # noqa: F811
    """The water series exported twice as two acquisitions (new series and instance UIDs): both are ingested
    (calf_water, calf_water_2), the calf uses the most superior one, and the calf inputs carry a warning that names
    both, which the calf QC turns into a review."""
    import pydicom
    from pydicom.uid import generate_uid

    from pipeline.core.layout import StudyDir
    from pipeline.workflow.calf import calf_inputs

    study = tmp_path / "study"
    shutil.copytree(bases["dicom"], study)
    water = next(d for d in study.iterdir()
                 if pydicom.dcmread(next(d.iterdir()), stop_before_pixels=True).SeriesDescription.endswith("_W"))
    repeat, uid = study / "repeat", generate_uid()
    shutil.copytree(water, repeat)
    for f in repeat.iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber = uid, generate_uid(), 21
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(f)
    out = tmp_path / "out"
    assert main(["ingest", str(study), "--out", str(out)]) == 0
    index = StudyDir(out).series()
    assert index.repeats("calf_water") == ["calf_water_2"] and index.repeats("calf_fat") == []
    warnings = calf_inputs(index).warnings
    assert len(warnings) == 1 and "2 series classified calf_water (calf_water, calf_water_2)" in warnings[0]
    clean = tmp_path / "clean"
    assert main(["ingest", str(bases["dicom"]), "--out", str(clean)]) == 0
    assert calf_inputs(StudyDir(clean).series()).warnings == []
