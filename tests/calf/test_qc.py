"""Calf segmentation quality control (pipeline.calf.qc) on label maps whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.calf.qc import (
    FAIL,
    PASS,
    REVIEW,
    judge_calf,
    largest_component_fraction,
    largest_component_fractions,
)
from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.synth.calf import CalfSpec, generate_calf


@pytest.fixture(scope="module")
def truth():
    spec = CalfSpec(n_slices=10, slice_mm=8.0, in_plane_mm=1.5, t_start=0.12)
    return generate_calf(spec, seed=3, fast=True).labels


def _cfg():
    return load_config("qc")["calf"]


def test_true_labels_pass(truth):
    qc = judge_calf(truth, registry("calf"), _cfg())
    assert qc.status == PASS, qc.reasons
    assert qc.structure_status("right", "soleus") == PASS
    summary = qc.as_summary()
    assert summary["calf.qc_status"] == PASS and summary["calf.left.gastrocnemius_medial.qc_status"] == PASS


def test_swapped_gastrocnemius_heads_fail_their_relation(truth):
    reg = registry("calf")
    arr = np.asarray(truth.array).copy()
    gm, gl = reg.sided_id("gastrocnemius_medial", "right"), reg.sided_id("gastrocnemius_lateral", "right")
    arr[truth.array == gm], arr[truth.array == gl] = gl, gm
    qc = judge_calf(truth.with_array(arr), reg, _cfg())
    assert qc.structure_status("right", "gastrocnemius_medial") == FAIL
    assert qc.structure_status("left", "gastrocnemius_medial") != FAIL
    assert qc.status in (REVIEW, FAIL)
    assert any("medial gastrocnemius medial" in r for r in qc.structures["right"]["gastrocnemius_medial"].reasons)
    assert "medial gastrocnemius medial" in qc.as_summary()["calf.right.gastrocnemius_medial.qc_reasons"]


def test_mirrored_leg_sides_fail_the_lateral_relations(truth):
    """Labels of a leg mirrored in x (a side swap inside the leg) put the fibula medial to the tibia."""
    reg = registry("calf")
    arr = np.asarray(truth.array)
    qc = judge_calf(truth.with_array(arr[::-1].copy()), reg, _cfg())  # right-leg labels now on the left, mirrored
    assert qc.status == FAIL or any(s.status == FAIL for legs in qc.structures.values() for s in legs.values())


def test_empty_and_fragmentary_label_maps_fail(truth):
    reg = registry("calf")
    empty = judge_calf(truth.with_array(np.zeros(truth.shape, np.int16)), reg, _cfg())
    assert empty.status == FAIL and "no calf structure" in empty.reasons[0]
    arr = np.asarray(truth.array).copy()
    for name in ("soleus", "tibialis_posterior", "fibula", "peroneus"):
        for side in ("left", "right"):
            arr[arr == reg.sided_id(name, side)] = 0
    qc = judge_calf(truth.with_array(arr), reg, _cfg())
    assert qc.status == FAIL
    assert any("not found" in r for r in qc.structures["left"]["soleus"].reasons)


def test_scattered_structure_is_judged_in_pieces(truth):
    reg = registry("calf")
    arr = np.asarray(truth.array).copy()
    tp = reg.sided_id("tibialis_posterior", "left")
    mask = arr == tp
    rng = np.random.default_rng(0)
    keep = mask & (rng.uniform(size=arr.shape) < 0.3)  # 30 % of its voxels, scattered
    arr[mask & ~keep] = reg.sided_id("soleus", "left")
    qc = judge_calf(truth.with_array(arr), reg, _cfg())
    assert qc.structure_status("left", "tibialis_posterior") == FAIL


def test_network_uncertainty_is_used():
    reg = registry("calf")
    spec = CalfSpec(n_slices=8, slice_mm=8.0, in_plane_mm=1.5, t_start=0.15)
    labels = generate_calf(spec, seed=4, fast=True).labels
    certainty = {"left": {"soleus": {"flip_dice": 0.5, "entropy": 0.05}},
                 "right": {"soleus": {"flip_dice": 0.97, "entropy": 0.15}}}
    qc = judge_calf(labels, reg, _cfg(), certainty)
    assert qc.structure_status("left", "soleus") == FAIL
    assert qc.structure_status("right", "soleus") == REVIEW


def test_mirror_averaged_entropy_is_judged_against_its_own_thresholds(truth):
    """The entropy of a bundle's mirror-averaged probabilities runs higher than one pass's, so it has thresholds of
    its own: a value between the two review thresholds asks for review as one pass's entropy, not as the mean's."""
    reg, cfg = registry("calf"), _cfg()
    assert cfg["mirrored_entropy_review"] > cfg["entropy_review"]
    h = (cfg["entropy_review"] + cfg["mirrored_entropy_review"]) / 2
    one_pass = judge_calf(truth, reg, cfg, {"left": {"soleus": {"entropy": h}}})
    mirrored = judge_calf(truth, reg, cfg, {"left": {"soleus": {"mirrored_entropy": h}}})
    assert one_pass.structure_status("left", "soleus") == REVIEW
    assert mirrored.structure_status("left", "soleus") == PASS
    high = judge_calf(truth, reg, cfg, {"left": {"soleus": {"mirrored_entropy": cfg["mirrored_entropy_fail"] + 0.01}}})
    assert high.structure_status("left", "soleus") == FAIL
    assert any("mirror-averaged" in r for r in high.structures["left"]["soleus"].reasons)


def test_concerns_of_two_kinds_fail_a_structure_one_kind_asks_for_review(truth):
    """Converging evidence: a borderline entropy alone asks for review; with a borderline flip agreement as well (a
    second kind of check) the structure fails, unless the configuration asks for three kinds."""
    reg, cfg = registry("calf"), _cfg()
    one = {"left": {"soleus": {"flip_dice": 0.97, "entropy": 0.15}}}
    two = {"left": {"soleus": {"flip_dice": 0.8, "entropy": 0.15}}}
    assert judge_calf(truth, reg, cfg, one).structure_status("left", "soleus") == REVIEW
    qc = judge_calf(truth, reg, cfg, two)
    assert qc.structure_status("left", "soleus") == FAIL
    assert any("2 independent checks" in r for r in qc.structures["left"]["soleus"].reasons)
    assert judge_calf(truth, reg, {**cfg, "review_kinds_to_fail": 3}, two).structure_status("left", "soleus") == REVIEW


def test_component_fractions_from_one_labelling_match_one_mask_at_a_time():
    """Regions of equal value labelled once in the joint box: the largest-piece share of every id, as from its own
    mask in its own box (random label volumes, both memory orders, absent ids)."""
    rng = np.random.default_rng(0)
    for k in range(200):
        arr = rng.integers(0, rng.integers(2, 8), size=tuple(int(n) for n in rng.integers(1, 12, 3))).astype(np.int16)
        arr = np.asfortranarray(arr) if k % 2 else arr
        boxes = ndimage.find_objects(arr.astype(np.int32))
        ids = [int(i) for i in rng.choice(np.arange(1, 9), size=4, replace=False)]
        want = {i: largest_component_fraction(arr[boxes[i - 1]] == i) for i in ids
                if i <= len(boxes) and boxes[i - 1] is not None}
        assert largest_component_fractions(arr, boxes, ids) == want


def test_doubts_about_many_structures_of_one_leg_fail_the_study(truth):
    """Three required structures of one leg marked for review (each by one kind of check, so none fails on its own)
    fail the study: the leg's segmentation as a whole is in doubt, and its passes with it. Two ask for review."""
    reg, cfg = registry("calf"), _cfg()
    doubt = {"flip_dice": 0.97, "entropy": 0.15}
    two = {"left": {"soleus": doubt, "gastrocnemius_lateral": doubt}}
    three = {"left": {"soleus": doubt, "gastrocnemius_lateral": doubt, "tibialis_posterior": doubt}}
    assert judge_calf(truth, reg, cfg, two).status == REVIEW
    qc = judge_calf(truth, reg, cfg, three)
    assert [qc.structure_status("left", n) for n in ("soleus", "gastrocnemius_lateral", "tibialis_posterior")] \
        == [REVIEW] * 3
    assert qc.status == FAIL and any("3 of the structures every calf holds are in doubt" in r for r in qc.reasons)
    assert judge_calf(truth, reg, {**cfg, "study_fail_doubted_structures": 4}, three).status == REVIEW
