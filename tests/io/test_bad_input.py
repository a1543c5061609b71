"""Bad input: each case gives one clear message naming the file and the fix, exit code 3, nothing left in OUT."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.nifti import load_volume
from pipeline.io.study import ingest_study


def _series(folder: Path, n: int = 6, seed: int = 0, description: str = "t2_tse_tra", z0: float = 0.0) -> list[Path]:
    data = np.random.default_rng(seed).integers(0, 500, (16, 12, n)).astype(np.uint16)
    aff = np.diag([-1.0, -1.0, 5.0, 1.0])
    aff[2, 3] = z0
    return write_series(Volume(data, aff), folder, StudyInfo(), SeriesInfo(description),
                        rng=np.random.default_rng(seed))


def _run_cli(study: Path, out: Path, capsys) -> str:
    rc = main(["ingest", str(study), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert not out.exists() or not any(out.rglob("*")), f"partial output left in {out}"
    assert "Fix:" in err
    return err


def test_missing_study_folder(tmp_path: Path, capsys):
    err = _run_cli(tmp_path / "nope", tmp_path / "out", capsys)
    assert "does not exist" in err and str(tmp_path / "nope") in err


def test_empty_folder(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    err = _run_cli(tmp_path / "empty", tmp_path / "out", capsys)
    assert "holds no files" in err


def test_only_junk_files(tmp_path: Path, capsys):
    study = tmp_path / "junk"
    study.mkdir()
    (study / "readme.txt").write_text("hello")
    (study / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    err = _run_cli(study, tmp_path / "out", capsys)
    assert "no DICOM image series" in err and "readme.txt" in err


def test_truncated_dicom(tmp_path: Path, capsys):
    study = tmp_path / "trunc"
    paths = _series(study / "s")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 300])  # pixel data cut short
    err = _run_cli(study, tmp_path / "out", capsys)
    assert paths[2].name in err and "truncated" in err


def test_missing_slice(tmp_path: Path, capsys):
    study = tmp_path / "gap"
    paths = _series(study / "s", n=8)
    import pydicom

    mid = sorted(paths, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))[4]
    mid.unlink()
    err = _run_cli(study, tmp_path / "out", capsys)
    assert "slice is missing" in err and "complete series" in err


def test_duplicate_positions(tmp_path: Path, capsys):
    study = tmp_path / "dup"
    _series(study / "s", n=6, seed=1)
    # a second acquisition with the same series UID and positions but other pixels and new SOP UIDs
    import pydicom
    from pydicom.uid import generate_uid

    src = sorted((study / "s").iterdir())[0]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PixelData = (np.frombuffer(ds.PixelData, np.uint16) + 7).astype(np.uint16).tobytes()
    ds.save_as(study / "s" / "copy_of_first")
    err = _run_cli(study, tmp_path / "out", capsys)
    assert "share slice position" in err and "copy_of_first" in err


def test_two_series_mixed_in_one_folder_are_separated(tmp_path: Path):
    study = tmp_path / "mixed"
    _series(study, n=6, seed=1, description="t2_tse_tra", z0=0.0)
    _series(study, n=5, seed=2, description="t1_tse_tra", z0=100.0)
    index = ingest_study(study, tmp_path / "out")
    assert sorted(s["n_slices"] for s in index["series"]) == [5, 6]
    assert len({s["uid"] for s in index["series"]}) == 2


def test_nifti_qform_sform_mismatch(tmp_path: Path, capsys):
    study = tmp_path / "nii"
    study.mkdir()
    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
    img.set_qform(np.diag([1.0, 1.0, 3.0, 1.0]), code=1)
    shifted = np.diag([1.0, 1.0, 3.0, 1.0])
    shifted[0, 3] = 12.0
    img.set_sform(shifted, code=1)
    nib.save(img, study / "water.nii.gz")
    (study / "study.yaml").write_text("series:\n  - {file: water.nii.gz, role: calf_water}\n")
    err = _run_cli(study, tmp_path / "out", capsys)
    assert "qform" in err and "sform" in err and "water.nii.gz" in err
    with pytest.raises(BadInputError, match="disagree"):
        load_volume(study / "water.nii.gz")


@pytest.mark.parametrize(("role", "meant"), [("calf_opposed", "calf_outphase"), ("calf_watr", "calf_water"),
                                            ("lumbar_sag_t2w", "lumbar_sag_t2"), ("thigh_t1", None)])
def test_a_nifti_role_legmri_does_not_know_is_refused_with_the_role_it_likely_means(tmp_path: Path, capsys, role,
                                                                                   meant):
    """A misspelt study.yaml role would be ingested and never used (the study measured without it): it is refused,
    naming the file, the role and, where one is close, the role it likely means; known roles pass."""
    study = tmp_path / "nii"
    study.mkdir()
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0])), study / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0])), study / "b.nii.gz")
    (study / "study.yaml").write_text(f"series:\n  - {{file: a.nii.gz, role: calf_inphase}}\n"
                                      f"  - {{file: b.nii.gz, role: {role}}}\n")
    err = _run_cli(study, tmp_path / "out", capsys)
    assert "b.nii.gz" in err and f"'{role}'" in err and "other_<n>" in err
    assert (f"did you mean '{meant}'" in err) if meant else ("did you mean" not in err)
    (study / "study.yaml").write_text("series:\n  - {file: a.nii.gz, role: calf_inphase}\n"
                                      "  - {file: b.nii.gz, role: other_1}\n")
    assert [s["role"] for s in ingest_study(study, tmp_path / "ok")["series"]] == ["calf_inphase", "other_1"]


def test_nifti_study_roundtrip(tmp_path: Path):
    study = tmp_path / "nii"
    study.mkdir()
    aff = np.array([[0, 0, -3.0, 40], [-0.9, 0, 0, 10], [0, 1.1, 0, -20], [0, 0, 0, 1]])
    data = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    nib.save(nib.Nifti1Image(data, aff), study / "t2.nii.gz")
    (study / "study.yaml").write_text("series:\n  - {file: t2.nii.gz, role: lumbar_sag_t2}\n")
    index = ingest_study(study, tmp_path / "out")
    got = load_volume(tmp_path / "out" / "volumes" / "lumbar_sag_t2.nii.gz")
    assert index["series"][0]["anatomy"] == "lumbar" and got.axcodes == ("R", "A", "S")
    src = Volume(data, aff)
    pts = np.argwhere(np.ones(data.shape, bool))
    back = np.rint(got.world_to_voxel(src.voxel_to_world(pts))).astype(int)
    np.testing.assert_array_equal(got.array[tuple(back.T)], data[tuple(pts.T)])


def test_the_declared_image_size_limit_comes_from_the_configuration(tmp_path: Path, monkeypatch):
    """``ingest.max_image_gib``: a 2 MiB image is read under the default 4 GiB and refused, before its data are
    read, under a limit of 1 MiB."""
    import shutil

    from pipeline.core.config import DEFAULT_CONFIG_DIR

    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((128, 128, 32), np.float32), np.eye(4)), path)
    assert load_volume(path).array.shape == (128, 128, 32)
    configs = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, configs)
    text = (configs / "default.yaml").read_text()
    assert "max_image_gib: 4\n" in text
    (configs / "default.yaml").write_text(text.replace("max_image_gib: 4\n", "max_image_gib: 0.001\n", 1))
    monkeypatch.setenv("LEGMRI_CONFIG_DIR", str(configs))
    with pytest.raises(BadInputError, match="max_image_gib"):
        load_volume(path)
