"""Ingestion of real scanner DICOM that ships offline (pydicom, pydicom-data, nibabel test files), compared with
dcm2niix voxel for voxel."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from pipeline.cli import main
from pipeline.io.dicom_read import read_stack
from pipeline.io.study import ingest_study, inspect_study
from tests.io.dcm2niix_ref import assert_same_as_dcm2niix, dcm2niix_volumes

DICOMDIRTESTS = Path(get_testdata_file("DICOMDIR")).parent
NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"


def _ours(out: Path, index: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    vols = []
    for s in index["series"]:
        if s["volume"]:
            img = nib.load(out / s["volume"])
            vols.append((np.asarray(img.get_fdata()), img.affine))
    return vols


def test_ct5n_descending_z_matches_dcm2niix(tmp_path: Path):
    study = DICOMDIRTESTS / "98892001" / "CT5N"
    files = sorted(study.iterdir())
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    inst = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert z != sorted(z) or inst != sorted(inst), "test premise: the files are not stored in ascending z"
    index = ingest_study(study, tmp_path / "out")
    assert len([s for s in index["series"] if s["volume"]]) == 1
    n = assert_same_as_dcm2niix(_ours(tmp_path / "out", index), dcm2niix_volumes(study, tmp_path / "d2n"))
    assert n == 1
    s = index["series"][0]
    assert s["shape"] == [16, 16, 5] and s["spacing_mm"][2] == pytest.approx(2.5)


def test_philips_localizer_series_holds_three_planes():
    rows = inspect_study(DICOMDIRTESTS / "98892003" / "MR2")
    by_uid: dict[str, set[str]] = {}
    for r in rows:
        by_uid.setdefault(r["uid"], set()).add(r["plane"])
    assert {"axial", "sagittal", "coronal"} in by_uid.values()
    assert all(r["role"].startswith("localizer") for r in rows if r["uid"].endswith(".136"))


def test_dicomdir_tree_is_walked_and_dicomdir_skipped(tmp_path: Path):
    study = tmp_path / "study"
    shutil.copytree(DICOMDIRTESTS / "98892001", study / "98892001")
    shutil.copy(DICOMDIRTESTS / "DICOMDIR", study / "DICOMDIR")
    (study / "notes.txt").write_text("not dicom")
    index = ingest_study(study, tmp_path / "out")
    reasons = {Path(s["file"]).name: s["reason"] for s in index["skipped"]}
    assert "DICOMDIR" in reasons["DICOMDIR"] and "not a DICOM file" in reasons["notes.txt"]
    assert len(index["series"]) == 3  # CT2N: two sagittal+coronal scout planes; CT5N: one axial stack
    assert sum(1 for s in index["series"] if s["volume"]) == 1  # CT2N (2 slices) is listed, not a volume
    # without the DICOMDIR the same series are found
    shutil.rmtree(tmp_path / "out")
    (study / "DICOMDIR").unlink()
    index2 = ingest_study(study, tmp_path / "out")
    assert [s["uid"] for s in index2["series"]] == [s["uid"] for s in index["series"]]


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_expb.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm"])
def test_mr_small_every_transfer_syntax_decodes_to_the_same_pixels(name: str):
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    vol = read_stack([get_testdata_file(name)])
    assert vol.shape == (ref.shape[1], ref.shape[0], 1)
    np.testing.assert_array_equal(vol.array[:, :, 0].T, ref)


def test_mr_small_geometry_follows_the_tags():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_stack([path])
    ipp = np.array(ds.ImagePositionPatient, float)
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    # voxel (i=column 3, j=row 5) lies at IPP + 3*dc*row + 5*dr*col in LPS; RAS negates x and y
    lps = ipp + 3 * dc * row + 5 * dr * col
    np.testing.assert_allclose(vol.voxel_to_world([[3, 5, 0]])[0], lps * [-1, -1, 1], atol=1e-6)


def test_enhanced_mr_per_frame_geometry_matches_dcm2niix(tmp_path: Path):
    study = tmp_path / "mprage"
    study.mkdir()
    with gzip.open(NIBABEL_DATA / "philips_mprage.dcm.gz", "rb") as fin:
        (study / "IM0001").write_bytes(fin.read())
    index = ingest_study(study, tmp_path / "out")
    assert index["series"][0]["shape"] == [176, 256, 256]
    n = assert_same_as_dcm2niix(_ours(tmp_path / "out", index), dcm2niix_volumes(study, tmp_path / "d2n"))
    assert n == 1


def test_enhanced_mr_without_functional_groups_is_refused_clearly(tmp_path: Path):
    study = tmp_path / "emri"
    study.mkdir()
    shutil.copy(get_testdata_file("emri_small.dcm"), study / "emri")
    assert main(["ingest", str(study), "--out", str(tmp_path / "out")]) == 3
    assert not (tmp_path / "out").exists()


def test_pydicom_data_mr_series_volume(tmp_path: Path):
    """pydicom-data's MR2 (Philips, uncompressed and J2K) decode to the same image."""
    a = read_stack([get_testdata_file("MR2_UNCR.dcm")])
    b = read_stack([get_testdata_file("MR2_J2KR.dcm")])
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
