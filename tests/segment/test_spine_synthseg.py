"""Spine tissue-map bank and random-contrast batches (pipeline.workflow.spine_synthseg)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.labels import registry
from pipeline.synth.lumbar import TISSUE_IDS
from pipeline.workflow.spine_synthseg import bank_subject, class_lut, cut_field_of_view, sampler_for


@pytest.fixture(scope="module")
def subject() -> dict[str, np.ndarray]:
    return bank_subject(3, sagittal=2, axial=1)


def test_class_lut_is_the_registry_class_map():
    reg = registry("spine")
    lut = class_lut()
    for lab in reg.labels:
        assert lut[lab.id] == reg.class_id(lab.structure)
    assert lut[0] == 0


def test_bank_classes_agree_with_tissues(subject):
    reg = registry("spine")
    c, t = subject["classes"], subject["tissue"]
    assert c.shape == t.shape and c.shape[:2] == (3, 3) and list(subject["plane"]) == [0, 0, 1]
    assert int(c.max()) < len(reg.classes)
    sac = reg.class_id("dural_sac")
    assert set(np.unique(c[np.isin(t, [TISSUE_IDS["csf"], TISSUE_IDS["cauda"]])])) == {sac}
    assert set(np.unique(c[np.isin(t, [TISSUE_IDS["nucleus"], TISSUE_IDS["annulus"]])])) == {reg.class_id("disc")}
    assert set(np.unique(c[t == TISSUE_IDS["marrow"]])) <= {reg.class_id("vertebral_body"), reg.class_id("sacrum")}
    assert set(np.unique(c[np.isin(t, [TISSUE_IDS["paraspinal"], TISSUE_IDS["background"]])])) == {0}
    assert (t == TISSUE_IDS["paraspinal"]).any() and (c[2] == reg.class_id("disc")).any() | (
        c[2] == reg.class_id("vertebral_body")).any()


def test_field_of_view_cut_zeroes_columns():
    c, t = np.ones((3, 4, 10), np.uint8), np.full((3, 4, 10), 5, np.uint8)
    cut_field_of_view(c, t, slice(2, 7))
    assert c[..., 2:7].all() and not c[..., :2].any() and not c[..., 7:].any() and not t[..., 7:].any()


def test_sampler_batch_shapes_classes_and_sac_focus(subject):
    reg = registry("spine")
    sac = reg.class_id("dural_sac")
    shows = [i for i in range(len(subject["plane"])) if (subject["classes"][i] == sac).any()]
    assert shows
    levels = {k: subject[k][shows] for k in ("classes", "tissue")}
    bank = [{**subject, **levels, "ff": np.broadcast_to(np.uint8(0), levels["tissue"].shape)}]
    sampler = sampler_for(bank, (96, 96), 0.75, seed=0, sac_fraction=1.0)
    x, y = sampler.batch(8)
    assert x.shape == (8, 1, 96, 96) and y.shape == (8, 1, 96, 96) and y.dtype == torch.int64
    assert x.dtype == torch.float32 and torch.isfinite(x).all() and int(y.max()) < len(reg.classes)
    assert all(bool((y[i] == sac).any()) for i in range(8))


def test_tied_tissues_follow_their_leader_and_fluid_is_bright_or_dark():
    from dataclasses import replace

    from pipeline.segment.synthseg import ContrastPrior, sample_intensities

    roles = {"background": 0, "muscle": 1, "fat": 2, "cortex": 3, "marrow": 4, "fluid": 5}
    prior = replace(ContrastPrior(), p_tied=1.0, p_uniform=0.0)
    rng = np.random.default_rng(0)
    draws = np.stack([sample_intensities(7, roles, rng, prior, tied=((6, 2),)) for _ in range(200)])
    assert np.abs(draws[:, 6] - draws[:, 2]).max() < 0.3
    fluid = draws[:, 5]
    assert ((fluid >= 0.7) | (fluid <= 0.2)).all() and (fluid >= 0.7).any() and (fluid <= 0.2).any()


def test_clutter_changes_only_the_background_class_inside_the_body():
    from pipeline.segment.synthseg import clutter

    img = np.full((40, 40), 0.3, np.float32)
    classes = np.zeros((40, 40), np.uint8)
    classes[10:20, 10:20] = 4
    tissue = np.ones((40, 40), np.uint8)
    tissue[:, :5] = 0
    out = clutter(img, classes, tissue, 0, np.random.default_rng(1))
    assert np.array_equal(out[classes > 0], img[classes > 0]) and np.array_equal(out[:, :5], img[:, :5])
    assert np.abs(out - img).max() > 0.05
