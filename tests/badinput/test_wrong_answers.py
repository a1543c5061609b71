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
