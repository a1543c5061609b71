"""The shipped model bundles (weights/) end to end: the index-case sample study through every stage with the real
networks, its predicted labels against the phantom's exact ground truth, the diagnosis it leads to, and side
assignment that follows the patient's anatomy (a mirrored patient, an array stored right-to-left), never array halves.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.calf.legs import sided_label_map
from pipeline.calf.measure import CalfImages, measure_calf_labels
from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.core.summary import Summary
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume
from pipeline.segment.bundle import load_bundle
from pipeline.segment.train import dice_per_class
from pipeline.synth.calf import generate_calf
from pipeline.synth.cases import make_case
from pipeline.workflow import stages

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "nmh_case"
MUSCLES = ("gastrocnemius_medial", "gastrocnemius_lateral", "soleus", "tibialis_anterior", "extensor_digitorum_longus",
           "peroneus", "tibialis_posterior", "flexor_digitorum_longus", "flexor_hallucis_longus")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    o = tmp_path_factory.mktemp("shipped") / "nmh_case"
    assert stages.run(SAMPLE, o) == 0
    return o


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((SAMPLE / "ground_truth.json").read_text())


def test_predicted_calf_labels_match_ground_truth(out: Path):
    pred = load_volume(out / "calf" / "labels.nii.gz")
    true = load_volume(SAMPLE / "ground_truth" / "calf_labels.nii.gz")
    assert pred.shape == true.shape and np.allclose(pred.affine, true.affine, atol=1e-3)
    reg = registry("calf")
    dice = dice_per_class(np.asarray(pred.array), np.asarray(true.array), len(reg.labels) + 1)
    for side in ("left", "right"):
        for m in MUSCLES:
            d = dice[reg.sided_id(m, side)]
            assert d is not None and d >= 0.80, f"{side} {m}: Dice {d}"
        assert np.mean([dice[reg.sided_id(m, side)] for m in MUSCLES]) >= 0.88


def test_measurements_from_predicted_labels(out: Path, truth: dict):
    s = Summary.load(out / "summary.json")
    for side in ("left", "right"):
        for m in ("gastrocnemius_medial", "soleus"):
            t = truth["calf"]["muscles"][side][m]
            assert s.get(f"calf.{side}.{m}.volume_ml") == pytest.approx(t["volume_ml"], rel=0.08)
            assert s.get(f"calf.{side}.{m}.ff_pct") == pytest.approx(t["ff_pct"], abs=4.0)
        girth_true = truth["calf"]["girth"]["right" if side == "right" else "left"]["max_girth_mm"]
        assert s.get(f"calf.{side}.girth_max_mm") == pytest.approx(girth_true, abs=6.0)
    lv = truth["spine"]["levels"]["L4-L5"]
    assert s.get("spine.L4-L5.dsca_mm2") == pytest.approx(lv["dsca_mm2"], rel=0.2)
    assert s.get("spine.L4-L5.right.lateral_recess_depth_mm") < s.get("spine.L4-L5.left.lateral_recess_depth_mm")
    for level, t in truth["spine"]["levels"].items():
        assert s.get(f"spine.{level}.ap_diameter_mm") == pytest.approx(t["ap_diameter_mm"], abs=1.0), level


def test_sac_probability_maps_lie_on_the_label_grids(out: Path):
    for name in ("sag", "ax", "ax_2", "ax_3"):
        labels = load_volume(out / "spine" / f"labels_{name}.nii.gz")
        prob = load_volume(out / "spine" / f"sac_probability_{name}.nii.gz")
        assert prob.same_grid(labels), name
        p, sac = np.asarray(prob.array), np.asarray(labels.array) == registry("spine").label_id("dural_sac")
        assert 0.0 <= p.min() and p.max() <= 1.0 + 1e-6
        assert np.median(p[sac]) > 0.9 and np.median(p[~sac]) < 0.1, name


def test_index_case_diagnosis_and_outputs(out: Path):
    findings = json.loads((out / "findings.json").read_text())
    assert findings["decision"]["hypothesis"] == "neurogenic_hypertrophy"
    assert findings["decision"]["statement"].startswith("neurogenic muscle hypertrophy, right S1")
    assert findings["territory_analysis"]["affected_side"] == "right"
    assert {"level": "L4-L5", "side": "right"}.items() <= findings["concordant_spine_findings"][0].items()
    for f in ("report.html", "calf/seg.dcm", "measurements_sr.dcm", "calf/measurements.csv", "calf/slices.csv",
              "spine/measurements.csv", "spine/labels_sag.nii.gz", "qa", "provenance.json"):
        assert (out / f).exists(), f
    prov = json.loads((out / "provenance.json").read_text())
    cfg = load_config("default")["segment"]
    for anatomy in ("calf", "spine"):
        assert prov["models"][anatomy]["sha256"] == load_bundle(cfg[f"{anatomy}_bundle"]).metadata["weights"]["sha256"]


def _stored_right_to_left(v: Volume) -> Volume:
    """The same image with its first array axis reversed and the affine adjusted (world positions unchanged)."""
    aff = v.affine.copy()
    aff[:3, 3] += aff[:3, 0] * (v.shape[0] - 1)
    aff[:3, 0] = -aff[:3, 0]
    return Volume(np.ascontiguousarray(np.asarray(v.array)[::-1]), aff)


def _reoriented(v: Volume, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Volume:
    """The same image stored with permuted and flipped array axes (world positions unchanged)."""
    arr = np.transpose(np.asarray(v.array), perm)
    aff = v.affine.copy()
    aff[:, :3] = v.affine[:, list(perm)]
    for ax, fl in enumerate(flips):
        if fl:
            arr = np.flip(arr, axis=ax)
            aff[:3, 3] += aff[:3, ax] * (arr.shape[ax] - 1)
            aff[:3, ax] = -aff[:3, ax]
    return Volume(np.ascontiguousarray(arr), aff)


@pytest.mark.parametrize("perm,flips", [((2, 0, 1), (False, False, False)),   # slice axis first (sagittal-ordered)
                                        ((1, 0, 2), (True, True, False)),    # rows/columns swapped and flipped
                                        ((0, 1, 2), (False, False, True))])  # reversed slice order
def test_another_storage_order_gives_the_same_sided_labels_in_world_space(out: Path, perm, flips):
    cfg = load_config("default")
    reg = registry("calf")
    bundle = load_bundle(cfg["segment"]["calf_bundle"])
    water, fat = load_volume(out / "volumes" / "calf_water.nii.gz"), load_volume(out / "volumes" / "calf_fat.nii.gz")
    ref = load_volume(out / "calf" / "labels.nii.gz")
    w2, f2 = _reoriented(water, perm, flips), _reoriented(fat, perm, flips)
    assert not np.allclose(w2.affine, water.affine)
    labels, _ = sided_label_map(bundle.predict([w2, f2]), reg, cfg["segment"]["min_component_ml"])
    pts = np.argwhere(np.ones(ref.shape, bool))
    back = np.rint(labels.world_to_voxel(ref.voxel_to_world(pts))).astype(int)
    moved = np.asarray(labels.array)[tuple(back.T)].reshape(ref.shape)
    dice = dice_per_class(moved, np.asarray(ref.array), len(reg.labels) + 1)
    sided = [d for i, d in enumerate(dice) if i > 0 and d is not None]
    assert len(sided) >= 2 * len(MUSCLES) and min(sided) >= 0.98


@pytest.mark.parametrize("fatty_side", ["left", "right"])
def test_sides_follow_the_patient_not_the_array(fatty_side: str):
    """The index-case anatomy with the fatty medial gastrocnemius on either side, stored both ways round: the shipped
    network and world-x side assignment must put the fatty muscle on the patient's ``fatty_side`` every time."""
    spec = make_case("nmh", 20260).calf
    other = "left" if fatty_side == "right" else "right"
    spec = replace(spec, pathology={fatty_side: spec.pathology["right"]},
                   fat_mm={fatty_side: spec.fat_mm["right"], other: spec.fat_mm["left"]})
    ph = generate_calf(spec, seed=11)
    cfg = load_config("default")
    reg = registry("calf")
    bundle = load_bundle(cfg["segment"]["calf_bundle"])
    for flip in (False, True):
        water, fat = ph.volume("calf_water"), ph.volume("calf_fat")
        if flip:
            water, fat = _stored_right_to_left(water), _stored_right_to_left(fat)
        labels, sides = sided_label_map(bundle.predict([water, fat]), reg, cfg["segment"]["min_component_ml"])
        assert sorted(sides.sides) == ["left", "right"]
        s = measure_calf_labels(labels, CalfImages(water, fat), reg, cfg["calf"]).summary
        assert s.get(f"calf.{fatty_side}.gastrocnemius_medial.ff_pct") > 60, (flip, fatty_side)
        assert s.get(f"calf.{other}.gastrocnemius_medial.ff_pct") < 15, (flip, fatty_side)


def test_study_without_lumbar_series_gives_spine_nulls(tmp_path: Path):
    calf_only = tmp_path / "calf_only"
    shutil.copytree(SAMPLE, calf_only)
    probe = tmp_path / "probe"
    stages.ingest(calf_only, probe)
    for s in json.loads((probe / "series.json").read_text())["series"]:
        if s["role"].startswith("lumbar"):
            for f in s["files"]:
                Path(f).unlink()
    o = tmp_path / "out"
    assert stages.ingest(calf_only, o) == 0
    from pipeline.core.layout import StudyDir
    from pipeline.workflow import spine

    assert spine.segment(StudyDir(o), stages.bundle_cache())["status"] == "no lumbar T2 series"
    spine.measure(StudyDir(o))
    s = Summary.load(o / "summary.json")
    assert s.get("spine.available") is False
    assert s.get("spine.L4-L5.dsca_mm2") is None
    assert "no lumbar T2 series" in s.missing["spine.L4-L5.dsca_mm2"]
