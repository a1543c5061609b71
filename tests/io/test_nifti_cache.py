"""Volumes kept in memory by load_volume / save_volume: the same array, type, memory order and affine as a fresh read
of the file, a private copy for every caller, and the file's current bytes whenever it was rewritten."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.core.volume import Volume
from pipeline.io import nifti
from pipeline.io.nifti import clear_cache, load_volume, save_probability, save_volume


def _oblique(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    affine[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0] @ np.diag([0.9151786, 0.9151786, 5.0])
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    return affine


def _fresh(path: Path) -> Volume:
    clear_cache()
    try:
        return load_volume(path)
    finally:
        clear_cache()


def _same(a: Volume, b: Volume) -> None:
    assert a.array.dtype == b.array.dtype and a.array.shape == b.array.shape
    assert np.array_equal(a.array, b.array, equal_nan=a.array.dtype.kind == "f")
    assert a.array.flags["F_CONTIGUOUS"] == b.array.flags["F_CONTIGUOUS"]
    assert a.array.flags["C_CONTIGUOUS"] == b.array.flags["C_CONTIGUOUS"]
    assert np.array_equal(a.affine, b.affine)
    assert a.meta == b.meta


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64, np.bool_, np.uint8])
def test_a_volume_written_then_read_equals_a_fresh_read(tmp_path: Path, dtype: type):
    rng = np.random.default_rng(1)
    data = (rng.normal(0, 100, (9, 7, 5)) > 0 if dtype is np.bool_ else rng.normal(0, 100, (9, 7, 5))).astype(dtype)
    if dtype is np.float32:
        data[0, 0, 0] = np.nan
    clear_cache()
    path = save_volume(Volume(data, _oblique(1)), tmp_path / "v.nii.gz")
    assert len(nifti._CACHE) == 1
    kept = load_volume(path)
    _same(kept, _fresh(path))
    _same(load_volume(path), _fresh(path))  # read from the file, then kept: the next read the same


def test_every_caller_gets_its_own_copy(tmp_path: Path):
    path = save_volume(Volume(np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.eye(4)), tmp_path / "v.nii.gz")
    first = load_volume(path)
    first.array[:] = -1
    first.affine[0, 3] = 99.0
    second = load_volume(path)
    assert second.array.min() == 0 and second.affine[0, 3] == 0.0


def test_a_rewritten_file_is_read_again(tmp_path: Path):
    path = tmp_path / "v.nii"
    save_volume(Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    assert load_volume(path).array.max() == 0
    changed = np.zeros((4, 4, 4), np.int16)
    changed[1, 2, 3] = 7
    nib.save(nib.Nifti1Image(changed, np.eye(4)), str(path))  # same size, same inode, written in place
    assert load_volume(path).array[1, 2, 3] == 7


def test_scaled_files_are_read_from_disk(tmp_path: Path):
    """A probability map is stored scaled (uint8 x 1/250): what is read back is the file's, not the array written."""
    path = save_probability(Volume(np.full((3, 3, 3), 0.3333), np.eye(4)), tmp_path / "p.nii.gz")
    _same(load_volume(path), _fresh(path))
    assert float(load_volume(path).array[0, 0, 0]) == pytest.approx(0.332, abs=1e-6)


def test_the_cache_stays_under_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nifti, "CACHE_MAX_BYTES", 3000)
    clear_cache()
    for k in range(5):
        save_volume(Volume(np.full((10, 10, 10), k, np.int16), np.eye(4)), tmp_path / f"v{k}.nii.gz")
    assert sum(entry[0].nbytes for entry in nifti._CACHE.values()) <= 3000
    assert [int(load_volume(tmp_path / f"v{k}.nii.gz").array[0, 0, 0]) for k in range(5)] == list(range(5))
    clear_cache()
