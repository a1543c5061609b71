"""Calf phantom: label maps agree with the analytic truth, determinism, anatomical spread, side convention,
DICOM round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.geometry import side_of_world_x
from pipeline.core.labels import registry
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.nifti import load_volume
from pipeline.io.study import ingest_study
from pipeline.synth.calf import MUSCLES, CalfSpec, MusclePathology, generate_calf

REG = registry("calf")


@pytest.fixture(scope="module")
def phantom():
    spec = CalfSpec(n_slices=12, slice_mm=6.0, in_plane_mm=1.2, t_start=0.2, pathology={
        "right": {"gastrocnemius_medial": MusclePathology(ff=0.75, pattern="complete"),
                  "soleus": MusclePathology(ff=0.2, pattern="patchy", scale=1.3)}})
    return generate_calf(spec, seed=11)


def test_label_volumes_match_truth_within_1_percent(phantom):
    lab = phantom.labels
    for side in ("left", "right"):
        for name in MUSCLES:
            truth = phantom.truth["muscles"][side][name]["volume_ml"]
            if truth < 15:  # structures barely present in this short stack
                continue
            got = np.count_nonzero(lab.array == REG.sided_id(name, side)) * lab.voxel_volume_mm3 / 1000
            assert got == pytest.approx(truth, rel=0.01), (side, name)


def test_label_fat_fraction_matches_truth_within_half_a_point(phantom):
    """FF from the noiseless water/fat maps over each label, eroded by one voxel in-plane to leave out the voxels
    that share signal with fascia or fat at the border (partial volume)."""
    from scipy import ndimage

    w, f = phantom.water_fat["water"].array, phantom.water_fat["fat"].array
    for side in ("left", "right"):
        for name in ("gastrocnemius_medial", "soleus", "tibialis_anterior", "peroneus"):
            mask = ndimage.binary_erosion(phantom.labels.array == REG.sided_id(name, side),
                                          structure=np.ones((3, 3, 1), bool))
            ff = 100 * f[mask].sum() / (w[mask].sum() + f[mask].sum())  # proton-density fat fraction
            assert ff == pytest.approx(phantom.truth["muscles"][side][name]["ff_pct"], abs=0.5), (side, name)
    assert phantom.truth["muscles"]["right"]["gastrocnemius_medial"]["ff_pct"] > 70
    assert phantom.truth["muscles"]["left"]["gastrocnemius_medial"]["ff_pct"] < 5


def test_legs_sit_on_their_patient_side(phantom):
    lab = phantom.labels
    cx = {}
    for side in ("left", "right"):
        ids = [REG.sided_id(n, side) for n in REG.classes[1:]]
        cx[side] = lab.voxel_to_world(np.argwhere(np.isin(lab.array, ids)).mean(axis=0, keepdims=True))[0, 0]
    mid = (cx["left"] + cx["right"]) / 2
    assert side_of_world_x(cx["right"], mid) == "right" and cx["right"] > cx["left"]
    # the medial gastrocnemius lies on the medial (midline) side of each leg
    for side in ("left", "right"):
        gm = lab.voxel_to_world(np.argwhere(lab.array == REG.sided_id("gastrocnemius_medial", side)).mean(0, keepdims=True))
        gl = lab.voxel_to_world(np.argwhere(lab.array == REG.sided_id("gastrocnemius_lateral", side)).mean(0, keepdims=True))
        assert abs(gm[0, 0] - mid) < abs(gl[0, 0] - mid), side


def test_same_seed_same_bytes_different_seed_different_anatomy():
    spec = CalfSpec(n_slices=6, slice_mm=8.0, in_plane_mm=1.5)
    a = generate_calf(spec, seed=5, fast=True)
    b = generate_calf(spec, seed=5, fast=True)
    assert a.volume("calf_water").array.tobytes() == b.volume("calf_water").array.tobytes()
    vols = []
    for seed in range(6):
        ph = generate_calf(spec, seed=seed, fast=True)
        vols.append([ph.truth["muscles"]["left"][m]["volume_ml"] for m in ("soleus", "tibialis_anterior", "peroneus")])
    cv = np.std(vols, axis=0) / np.mean(vols, axis=0)
    assert np.all(cv > 0.04), f"anatomy barely varies between seeds: CV={cv}"


def test_one_leg_study():
    ph = generate_calf(CalfSpec(legs=("left",), n_slices=5, slice_mm=8.0, in_plane_mm=1.5), seed=2, fast=True)
    present = {REG.by_id()[i].side for i in np.unique(ph.labels.array) if i}
    assert present == {"left"} and ph.truth["legs_in_fov"] == ["left"]


def test_random_specs_span_the_variety():
    rng = np.random.default_rng(0)
    specs = [CalfSpec.random(rng) for _ in range(60)]
    assert {s.vendor for s in specs} == {"siemens", "philips", "ge"}
    assert any(len(s.legs) == 1 for s in specs) and any(len(s.legs) == 2 for s in specs)
    assert min(s.slice_mm for s in specs) <= 3.0 and max(s.slice_mm for s in specs) >= 8.0
    assert min(s.in_plane_mm for s in specs) < 0.8 and max(s.in_plane_mm for s in specs) > 1.3
    assert any(any(p.ff > 0.5 for p in side.values()) for s in specs for side in s.pathology.values())


def test_dicom_round_trip_is_exact(tmp_path: Path):
    ph = generate_calf(CalfSpec(n_slices=5, slice_mm=7.0, in_plane_mm=1.4, rotation_deg={"left": -15, "right": 9}),
                       seed=4, fast=True)
    vol = ph.volume("calf_water")
    write_series(vol, tmp_path / "study" / "water", StudyInfo(),
                 SeriesInfo("t1_vibe_dixon_tra_W", image_type=("ORIGINAL", "PRIMARY", "M", "DIXON", "W"),
                            body_part="LEG"), rng=np.random.default_rng(0), transfer_syntax="jpeg2000")
    index = ingest_study(tmp_path / "study", tmp_path / "out")
    assert index["series"][0]["role"] == "calf_water"
    got = load_volume(tmp_path / "out" / "volumes" / "calf_water.nii.gz")
    np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)
    np.testing.assert_array_equal(got.array, vol.array)


def test_spec_replace_keeps_defaults():
    spec = replace(CalfSpec(), vendor="ge")
    assert spec.vendor == "ge" and spec.legs == ("left", "right")
