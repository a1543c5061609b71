"""Atlas calf phantom (evaluation only): determinism, sides from world x, truth against the label map, anatomical
relations of the muscles, fat fraction truth against the noiseless maps, study writing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import ndimage

from pipeline.core.geometry import side_of_world_x
from pipeline.core.labels import registry
from pipeline.io.nifti import load_volume
from pipeline.synth.calf_atlas import (
    CONTRASTS,
    MUSCLES,
    AtlasPathology,
    AtlasSpec,
    generate_atlas_calf,
    write_atlas_study,
)

REG = registry("calf")


def _small(**kw) -> AtlasSpec:
    base = dict(n_slices=4, slice_mm=15.0, in_plane_mm=1.5, t_start=0.2, t_end=0.6, rotation_deg={"left": 5.0,
                "right": 12.0}, pathology={"right": {"gastrocnemius_medial": AtlasPathology(ff=0.8,
                                                                                             pattern="complete"),
                                                  "soleus": AtlasPathology(ff=0.3, pattern="patchy", scale=0.8)}})
    base.update(kw)
    return AtlasSpec(**base)


@pytest.fixture(scope="module")
def phantom():
    return generate_atlas_calf(_small(), seed=5)


def _centroid_x_y(lab, ids) -> np.ndarray:
    pts = np.argwhere(np.isin(lab.array, ids))
    return lab.voxel_to_world(pts.mean(axis=0, keepdims=True))[0, :2]


def test_same_seed_same_arrays_other_seed_differs(phantom):
    again = generate_atlas_calf(_small(), seed=5)
    for a, b in zip(phantom.series, again.series):
        assert a.role == b.role and np.array_equal(a.volume.array, b.volume.array)
    assert np.array_equal(phantom.labels.array, again.labels.array)
    other = generate_atlas_calf(_small(), seed=6)
    assert not np.array_equal(phantom.labels.array, other.labels.array)


def test_series_roles_and_grid(phantom):
    assert [s.role for s in phantom.series] == [f"calf_{c}" for c in CONTRASTS]
    for s in phantom.series:
        assert s.volume.same_grid(phantom.labels) and s.volume.array.dtype == np.uint16
        assert s.volume.array.max() > 100
    fat, water = phantom.volume("calf_fat").array, phantom.volume("calf_water").array
    sub = phantom.labels.array == REG.sided_id("subcutaneous_fat", "left")
    sol = phantom.labels.array == REG.sided_id("soleus", "left")
    assert np.median(fat[sub]) > 3 * np.median(fat[sol]) and np.median(water[sol]) > 3 * np.median(water[sub])


def test_legs_on_their_side_from_world_x(phantom):
    lab = phantom.labels
    cx = {s: _centroid_x_y(lab, [REG.sided_id(n, s) for n in REG.classes[1:]])[0] for s in ("left", "right")}
    mid = (cx["left"] + cx["right"]) / 2
    for side in ("left", "right"):
        assert side_of_world_x(cx[side], mid) == side
    assert cx["right"] > cx["left"]  # RAS+: the patient's right has the larger x
    assert phantom.truth["leg_centroid_x_mm"]["right"] == pytest.approx(cx["right"], abs=0.01)


def test_truth_volumes_are_the_label_counts(phantom):
    lab = phantom.labels
    for side in ("left", "right"):
        for name in REG.classes[1:]:
            n = np.count_nonzero(lab.array == REG.sided_id(name, side))
            assert phantom.truth["muscles"][side][name]["volume_ml"] == pytest.approx(
                n * lab.voxel_volume_mm3 / 1000, abs=1e-3), (side, name)
    for name in MUSCLES:
        assert phantom.truth["muscles"]["left"][name]["volume_ml"] > 1.0, name


def test_anatomical_relations_hold(phantom):
    lab = phantom.labels
    cx = {s: _centroid_x_y(lab, [REG.sided_id(n, s) for n in REG.classes[1:]])[0] for s in ("left", "right")}
    mid = (cx["left"] + cx["right"]) / 2
    for side in ("left", "right"):
        c = {n: _centroid_x_y(lab, [REG.sided_id(n, side)]) for n in REG.classes[1:] if n != "subcutaneous_fat"}
        medial = {n: abs(v[0] - mid) for n, v in c.items()}  # distance from the midline between the legs
        assert medial["gastrocnemius_medial"] < medial["gastrocnemius_lateral"], side
        assert medial["fibula"] > medial["tibia"], side
        assert medial["peroneus"] > medial["tibia"], side
        # y is anterior (RAS+): soleus deep (anterior) to both gastrocnemii, tibialis anterior in front of them
        assert c["soleus"][1] > max(c["gastrocnemius_medial"][1], c["gastrocnemius_lateral"][1]), side
        assert c["tibialis_posterior"][1] > c["soleus"][1], side
        assert c["tibialis_anterior"][1] > c["tibialis_posterior"][1] and c["tibialis_anterior"][1] > c["soleus"][1]
    vol = {n: phantom.truth["muscles"]["left"][n]["volume_ml"] for n in MUSCLES}
    assert vol["gastrocnemius_medial"] > vol["gastrocnemius_lateral"]


def test_ff_truth_matches_noiseless_maps(phantom):
    w, f = phantom.water_fat["water"].array, phantom.water_fat["fat"].array
    for side, name, lo, hi in (("right", "gastrocnemius_medial", 75, 85), ("right", "soleus", 10, 60),
                               ("left", "soleus", 1, 9)):
        mask = ndimage.binary_erosion(phantom.labels.array == REG.sided_id(name, side),
                                      structure=np.ones((3, 3, 1), bool))
        ff = 100 * f[mask].sum() / (w[mask].sum() + f[mask].sum())
        truth = phantom.truth["muscles"][side][name]["ff_pct"]
        assert lo < truth < hi, (side, name, truth)
        assert ff == pytest.approx(truth, abs=3.0), (side, name)


def test_one_leg_and_random_specs_render():
    ph = generate_atlas_calf(_small(legs=("right",), n_slices=2), seed=1)
    assert ph.truth["legs_in_fov"] == ["right"]
    assert not np.isin(ph.labels.array, [REG.sided_id(n, "left") for n in REG.classes[1:]]).any()
    spec = AtlasSpec.random(np.random.default_rng(9))
    spec.n_slices, spec.slice_mm, spec.in_plane_mm = 2, 20.0, 1.6
    ph = generate_atlas_calf(spec, seed=9)
    assert ph.labels.array.max() > 0


def test_write_study_nifti_single_contrast(tmp_path):
    out = write_atlas_study(3, tmp_path / "atlas", fmt="nifti", spec=_small(n_slices=2),
                            contrasts=("inphase", "outphase", "anatomical"))
    study = yaml.safe_load((out / "study.yaml").read_text())
    assert [s["role"] for s in study["series"]] == ["calf_inphase", "calf_outphase", "calf_anatomical"]
    vol = load_volume(out / "calf_anatomical.nii.gz")
    lab = load_volume(out / "ground_truth" / "calf_labels.nii.gz")
    assert vol.shape == lab.shape and lab.array.max() > 0
    assert (out / "ground_truth.json").exists()
    with pytest.raises(ValueError):
        write_atlas_study(3, tmp_path / "bad", contrasts=("t2",))


def test_independent_of_the_training_generator():
    """The evaluation phantoms share no code with the generator the network is trained on."""
    import ast
    from pathlib import Path

    import pipeline.synth.calf_atlas as atlas
    import pipeline.synth.not_calf as not_calf

    for mod in (atlas, not_calf):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not names & {"pipeline.synth.calf", "pipeline.synth.cases", "pipeline.synth.write",
                            "pipeline.synth.physics"}, mod.__name__
