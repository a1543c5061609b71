"""DICOM series built with known geometry in several orientations: world coordinates of known voxels, patient side,
reversed slice order and shuffled file names."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.core.geometry import side_of_world_x
from pipeline.core.volume import Volume
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.nifti import load_volume
from pipeline.io.study import ingest_study


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


ORIENTATIONS = {
    # name: 3x3 matrix whose columns are the RAS directions of array axes 0, 1, 2
    "axial": np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1.0]]),  # typical DICOM axial: LPS rows/cols
    "axial_reversed_slices": np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1.0]]),
    "axial_flipped_rows_cols": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1.0]]),
    "sagittal": np.array([[0, 0, -1], [-1, 0, 0], [0, -1, 0.0]]),
    "coronal": np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0.0]]),
    "oblique": _rot("x", 17) @ _rot("z", 23) @ np.diag([-1, -1, 1.0]),
}


def _volume(directions: np.ndarray) -> Volume:
    """A 24x20x7 volume whose voxel value encodes its index, so every voxel can be found again."""
    i, j, k = np.meshgrid(np.arange(24), np.arange(20), np.arange(7), indexing="ij")
    data = (i * 1000 + j * 10 + k).astype(np.uint16)
    aff = np.eye(4)
    aff[:3, :3] = directions @ np.diag([0.8, 0.9, 4.0])
    aff[:3, 3] = [60.0, -35.0, 120.0]
    return Volume(data, aff)


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_every_voxel_lands_at_its_world_position(tmp_path: Path, name: str):
    vol = _volume(ORIENTATIONS[name])
    study = tmp_path / "study"
    rng = np.random.default_rng(3)
    paths = write_series(vol, study / "series", StudyInfo(), SeriesInfo("t2_tse"), rng=rng, random_names=True)
    # shuffle names: InstanceNumber/file order must not matter
    for p, q in zip(paths, rng.permutation(paths)):
        p.rename(p.with_name(q.name + "_x"))
    index = ingest_study(study, tmp_path / "out")
    (entry,) = [s for s in index["series"] if s["volume"]]
    got = load_volume(tmp_path / "out" / entry["volume"])
    assert sorted(got.shape) == sorted(vol.shape)
    # every voxel of the written volume: find it in the ingested volume through world coordinates
    idx = np.argwhere(np.ones(vol.shape, bool))
    world = vol.voxel_to_world(idx)
    back = np.rint(got.world_to_voxel(world)).astype(int)
    assert np.abs(got.world_to_voxel(world) - back).max() < 1e-4
    np.testing.assert_array_equal(got.array[tuple(back.T)], vol.array[tuple(idx.T)])
    np.testing.assert_allclose(sorted(got.spacing_mm), sorted(vol.spacing_mm), atol=1e-5)
    if name == "axial_reversed_slices":
        ipp_z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
                 for p in sorted((study / "series").iterdir())]
        assert len(set(ipp_z)) == 7


def test_patient_side_of_a_right_leg_blob(tmp_path: Path):
    """A bright blob written at patient-right (LPS x < 0) is found at RAS x > 0 and called right."""
    data = np.zeros((40, 30, 5), np.uint16)
    data[5:12, 10:20, :] = 1000  # low column index = LPS -x = patient right for an LPS-aligned axial grid
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, -1.0, 3.0])  # RAS: columns run towards patient left (+x LPS)
    aff[:3, 3] = [20.0, 0.0, 0.0]
    vol = Volume(data, aff)
    write_series(vol, tmp_path / "s" / "a", StudyInfo(), SeriesInfo("t1"), rng=np.random.default_rng(0))
    index = ingest_study(tmp_path / "s", tmp_path / "out")
    got = load_volume(tmp_path / "out" / index["series"][0]["volume"])
    centroid = got.voxel_to_world(np.argwhere(got.array > 500).mean(axis=0, keepdims=True))[0]
    midline = got.voxel_to_world([[(got.shape[0] - 1) / 2, 0, 0]])[0][0]
    assert centroid[0] > midline
    assert side_of_world_x(centroid[0], midline) == "right"
    ds = pydicom.dcmread(next((tmp_path / "s" / "a").iterdir()))
    ipp_x_lps = float(ds.ImagePositionPatient[0])
    assert ipp_x_lps == pytest.approx(-20.0)  # written in LPS: RAS x=+20 is LPS x=-20


def test_probability_map_round_trip(tmp_path: Path):
    """Probability maps are stored as scaled uint8 and read back as 0-1 values on the same grid."""
    from pipeline.io.nifti import save_probability

    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, (12, 9, 4)).astype(np.float32)
    values[0, 0, 0], values[1, 0, 0] = 0.0, 1.0
    affine = np.array([[0.0, 0, 3.0, -40], [-0.8, 0, 0, 90], [0, -0.8, 0, 60], [0, 0, 0, 1]])
    path = save_probability(Volume(values, affine), tmp_path / "p.nii.gz")
    back = load_volume(path)
    assert np.allclose(back.affine, affine)
    got = np.asarray(back.array)
    assert np.abs(got - values).max() <= 0.5 / 250 + 1e-6
    assert got[0, 0, 0] == 0.0 and got[1, 0, 0] == pytest.approx(1.0)
    assert nib.load(path).get_data_dtype() == np.uint8
