"""The training loop on tiny data: it learns a two-class toy task, writes a verified bundle with its record, and
fine-tuning starts from a bundle's exact weights (and refuses a bundle with other labels)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import BundleError
from pipeline.core.labels import registry
from pipeline.core.provenance import file_sha256
from pipeline.core.volume import Volume
from pipeline.segment.bundle import load_bundle
from pipeline.segment.train import TrainConfig, train_bundle

CALF = registry("calf")


def _cases(n: int, seed: int) -> list[tuple[list[Volume], Volume]]:
    """Bright discs (class 1 of the calf registry) of random size and place on a noisy background, 1 mm pixels, 4 slices."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[:48, :48]
    for _ in range(n):
        lab = np.zeros((48, 48, 4), np.uint8)
        for k in range(4):
            cy, cx, r = rng.uniform(14, 34), rng.uniform(14, 34), rng.uniform(5, 11)
            lab[..., k] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = lab * 100.0 + rng.normal(20, 8, lab.shape)
        aff = np.diag([1.0, 1.0, 3.0, 1.0])
        out.append(([Volume(img.astype(np.float32), aff)], Volume(lab, aff)))
    return out


def _cfg(name: str, **kw) -> TrainConfig:
    base = TrainConfig(name=name, anatomy="calf", labels=list(CALF.classes), input_channels=["water"],
                       target_spacing_mm=(1.0, 1.0), channels=(4, 8), strides=(2,), num_res_units=0, patch=(32, 32),
                       batch_size=8, max_iterations=60, max_minutes=5.0, learning_rate=0.01, validate_every=30)
    return replace(base, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train") / "toy"
    record = train_bundle(_cases(6, 0), _cases(2, 1), _cfg("toy"), out, log=lambda _: None)
    return out, record


def test_training_learns_and_writes_a_verified_bundle(trained):
    out, record = trained
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["weights"]["sha256"] == file_sha256(out / "model.safetensors")
    assert record["iterations"] == 60 and [h["iteration"] for h in record["history"]] == [30, 60]
    assert record["validation_dice"][CALF.classes[1]] > 0.8  # a bright disc on a dark background is learnt in 60 steps
    assert record["initialised_from"] is None
    b = load_bundle(out)
    vols, lab = _cases(1, 7)[0]
    pred = b.predict(vols)
    p, t = np.asarray(pred.array) == 1, np.asarray(lab.array) == 1
    assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.8


def test_fine_tuning_starts_from_the_bundle_weights(trained, tmp_path: Path):
    out, _ = trained
    # no training step: the new bundle must hold exactly the starting weights
    rec = train_bundle(_cases(2, 3), _cases(1, 4), _cfg("toy2", init_from=str(out), max_iterations=0),
                       tmp_path / "toy2", log=lambda _: None)
    assert rec["initialised_from"]["sha256"] == file_sha256(out / "model.safetensors")
    assert file_sha256(tmp_path / "toy2" / "model.safetensors") == file_sha256(out / "model.safetensors")


def test_fine_tuning_refuses_a_bundle_with_other_labels(trained, tmp_path: Path):
    out, _ = trained
    with pytest.raises(BundleError, match="labels"):
        train_bundle(_cases(2, 3), _cases(1, 4),
                     _cfg("toy3", anatomy="spine", labels=list(registry("spine").classes), init_from=str(out),
                          max_iterations=0),
                     tmp_path / "toy3", log=lambda _: None)


def _two_plane_cases() -> list[tuple[list[Volume], Volume]]:
    """One sagittal stack (3 mm slices along x) and one axial stack (3 mm along z); class 1 fills a square on two
    slices of each."""
    out = []
    for slice_axis in (0, 2):
        shape = [32, 32, 32]
        shape[slice_axis] = 6
        lab = np.zeros(shape, np.uint8)
        sl = [slice(8, 20)] * 3
        sl[slice_axis] = slice(2, 4)
        lab[tuple(sl)] = 1
        aff = np.eye(4)
        aff[slice_axis, slice_axis] = 3.0
        out.append(([Volume(lab * 100.0 + 10.0, aff)], Volume(lab, aff)))
    return out


def test_focus_slices_are_the_slices_of_the_plane_that_show_the_class():
    from pipeline.segment.train import focus_slices, prepare_slices, slice_plane_of

    cases = _two_plane_cases()
    cfg = _cfg("x", slice_plane="acquisition")
    prepared = [prepare_slices(ch, lab, "acquisition", (1.0, 1.0), cfg.normalisation) for ch, lab in cases]
    planes = [slice_plane_of(ch, "acquisition") for ch, _ in cases]
    assert planes == ["sagittal", "axial"]
    assert focus_slices(prepared, planes, 1, "sagittal") == [(0, 2), (0, 3)]
    assert focus_slices(prepared, planes, 1, None) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert focus_slices(prepared, planes, 2, None) == []


def test_oversampled_items_are_patches_centred_on_the_class():
    from pipeline.segment.train import focus_slices, prepare_slices, sample_item, slice_plane_of

    cases = _two_plane_cases()
    cfg = _cfg("x", slice_plane="acquisition", patch=(16, 16), oversample_class=CALF.classes[1],
               oversample_plane="axial", oversample_fraction=1.0)
    prepared = [prepare_slices(ch, lab, "acquisition", (1.0, 1.0), cfg.normalisation) for ch, lab in cases]
    planes = [slice_plane_of(ch, "acquisition") for ch, _ in cases]
    focus = focus_slices(prepared, planes, 1, "axial")
    index = [(ci, si) for ci, (a, _) in enumerate(prepared) for si in range(len(a))]
    rng = np.random.default_rng(0)
    for _ in range(20):
        item = sample_item(prepared, index, focus, 1, cfg, rng)
        assert item["image"].shape == (1, 16, 16) and item["label"].shape == (1, 16, 16)
        assert item["label"][0, 8, 8] == 1  # the drawn class pixel is the patch centre
    plain = replace(cfg, oversample_fraction=0.0)
    shown = [sample_item(prepared, index, focus, 1, plain, rng)["label"].any() for _ in range(60)]
    assert not all(shown)  # uniform slices: most do not show the class


def test_oversampling_a_class_the_bundle_lacks_is_refused(tmp_path: Path):
    from pipeline.core.errors import ConfigError

    cfg = _cfg("x", oversample_class="dural_sac", oversample_fraction=0.3, max_iterations=1)
    with pytest.raises(ConfigError, match="dural_sac"):
        train_bundle(_cases(2, 0), _cases(1, 1), cfg, tmp_path / "x", log=lambda _: None)


def test_oversampling_is_recorded_in_the_bundle(tmp_path: Path):
    cfg = _cfg("x", oversample_class=CALF.classes[1], oversample_fraction=0.5, max_iterations=2, validate_every=2)
    train_bundle(_cases(2, 0), _cases(1, 1), cfg, tmp_path / "x", log=lambda _: None)
    meta = json.loads((tmp_path / "x" / "metadata.json").read_text())
    assert meta["training"]["oversampling"] == {"class": CALF.classes[1], "plane": None, "fraction": 0.5}


@pytest.mark.parametrize("spacing", [0.87, 1.06, 0.62])
def test_resampled_class_maps_stay_on_the_image(spacing: float):
    """A bar's class map and image, resampled to 0.75 mm for training, have their edges in the same place (within a
    quarter of a target pixel); the plain "nearest" mode shifted the class map by up to half an input pixel."""
    from pipeline.segment.train import prepare_slices

    lab = np.zeros((60, 60, 3), np.uint8)
    lab[17:41, :, :] = 1
    aff = np.diag([spacing, spacing, 3.0, 1.0])
    img, classes = prepare_slices([Volume(lab * 100.0 + 10.0, aff)], Volume(lab, aff), "axial", (0.75, 0.75),
                                  {"method": "joint_percentile", "percentile": 99.5})
    profile = img[1, 0, :, 30] / img[1, 0, :, 30].max()
    half = np.nonzero(profile >= 0.5 * (1 + 10 / 110))[0]  # the image's half-way level between 10 and 110
    inside = np.nonzero(classes[1, :, 30] == 1)[0]
    assert abs((inside[0] + inside[-1]) / 2 - (half[0] + half[-1]) / 2) <= 0.25 + 1e-6


def test_calf_phantoms_made_by_two_processes_are_those_made_by_one():
    from pipeline.workflow.training import synthetic_cases

    serial = list(synthetic_cases("calf", [3, 4], fast=True))
    parallel = list(synthetic_cases("calf", [3, 4], fast=True, workers=2))
    assert len(parallel) == 2
    for (chs_a, lab_a), (chs_b, lab_b) in zip(serial, parallel):
        assert np.array_equal(np.asarray(lab_a.array), np.asarray(lab_b.array))
        assert np.allclose(lab_a.affine, lab_b.affine)
        for a, b in zip(chs_a, chs_b):
            assert np.array_equal(np.asarray(a.array), np.asarray(b.array))


def test_a_starting_bundle_that_cannot_start_training_is_refused_before_any_phantom_is_made(tmp_path, monkeypatch):
    """The shipped spine bundle is an ensemble: `legmri train spine --synthetic N --init spine_t2_unet` without
    --init-member stops at once, naming the option, instead of after generating the phantoms."""
    from pipeline.core.errors import BundleError
    from pipeline.workflow import training
    from pipeline.workflow.training import train

    made = []
    monkeypatch.setattr(training, "synthetic_cases", lambda *a, **k: made.append(a) or iter([]))
    with pytest.raises(BundleError, match="--init-member"):
        train("spine", tmp_path / "out", synthetic=4, overrides={"init_from": "spine_t2_unet", "max_minutes": 0.01})
    assert made == []
