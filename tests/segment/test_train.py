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
