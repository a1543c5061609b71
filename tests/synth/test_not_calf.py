"""Non-calf inputs for the calf quality control: each kind gives the five calf-role series on one grid, is
deterministic, looks like what it claims to be, and writes as a calf study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scipy import ndimage

from pipeline.io.nifti import load_volume
from pipeline.synth.not_calf import KINDS, generate_not_calf, write_not_calf_study

ROLES = ["calf_water", "calf_fat", "calf_inphase", "calf_outphase", "calf_anatomical"]


@pytest.mark.parametrize("kind", KINDS)
def test_five_calf_roles_on_one_grid_and_deterministic(kind):
    a = generate_not_calf(kind, seed=2, n_slices=3, in_plane_mm=2.0)
    b = generate_not_calf(kind, seed=2, n_slices=3, in_plane_mm=2.0)
    assert [s.role for s in a.series] == ROLES
    for s, t in zip(a.series, b.series):
        assert s.volume.same_grid(a.series[0].volume) and s.volume.array.dtype == np.uint16
        assert np.array_equal(s.volume.array, t.volume.array)
    if kind == "empty":
        assert all(not s.volume.array.any() for s in a.series)
    if kind == "noise":
        arr = a.volume("calf_water").array.astype(float)
        assert arr.std() > 5 and abs(arr[:100].mean() - arr[-100:].mean()) < 0.1 * arr.mean()  # no structure


def _bone_components_per_limb(ph, k):
    bones = [i for i, n in ph.label_names.items() if n in ("femur", "calcaneus", "talus", "navicular_cuneiforms",
                                                            "cuboid") or n.startswith("metatarsal")]
    mask = np.isin(ph.labels.array[:, :, k], bones)
    body = ph.labels.array[:, :, k] > 0
    limbs, n_limbs = ndimage.label(body)
    out = []
    for i in range(1, n_limbs + 1):
        out.append(ndimage.label(mask & (limbs == i))[1])
    return out


def test_thigh_has_one_central_bone_and_a_large_cross_section():
    ph = generate_not_calf("thigh", seed=4, n_slices=3, in_plane_mm=2.0)
    k = 1
    assert _bone_components_per_limb(ph, k) == [1, 1]
    lab = ph.labels
    body, n = ndimage.label(lab.array[:, :, k] > 0)
    area_cm2 = [np.count_nonzero(body == i) * lab.spacing_mm[0] * lab.spacing_mm[1] / 100 for i in (1, 2)]
    assert min(area_cm2) > 130  # a calf is about 70-110 cm2 at its widest
    names = set(ph.label_names.values())
    assert {"femur", "rectus_femoris", "vastus_lateralis", "biceps_femoris", "adductor_magnus"} <= names


def test_foot_shows_metatarsals_and_hindfoot_bones():
    ph = generate_not_calf("foot", seed=4, n_slices=12, in_plane_mm=1.0)
    comps = [_bone_components_per_limb(ph, k) for k in range(12)]
    assert max(min(c) for c in comps) >= 5  # five metatarsals in one slice of each foot
    hind = ph.label_names.values()
    assert "calcaneus" in hind and "talus" in hind


def test_write_not_calf_study_as_calf_roles(tmp_path):
    out = write_not_calf_study("noise", 1, tmp_path / "noise", fmt="nifti", n_slices=2)
    study = yaml.safe_load((out / "study.yaml").read_text())
    assert [s["role"] for s in study["series"]] == ROLES
    assert load_volume(out / "calf_water.nii.gz").shape[2] == 2
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["not_calf"]["is_calf"] is False and truth["calf"] is None
    out = write_not_calf_study("empty", 1, tmp_path / "empty", fmt="dicom", n_slices=2)
    assert len(list((out / "DICOM").rglob("*"))) >= 10
