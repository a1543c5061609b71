"""The flip check on every second slice estimates the flip agreement of all slices (sample control study, shipped
Dixon bundle)."""

from __future__ import annotations

import copy
from pathlib import Path

from pipeline.calf.legs import sided_label_map
from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.core.layout import StudyDir
from pipeline.workflow import stages
from pipeline.workflow.calf import calf_inputs, flip_check, network_inputs

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "control"


def test_every_second_slice_estimates_all_slices(tmp_path):
    out = tmp_path / "out"
    assert stages.ingest(SAMPLE, out) == 0
    study = StudyDir(out)
    bundle = stages.bundle_cache().get(load_config("default")["segment"]["calf_bundle"])
    inputs = calf_inputs(study.series(), study)
    channels, _ = network_inputs(bundle.metadata["input_channels"], inputs, study.series())
    reg = registry("calf")
    classes = bundle.predict(channels)
    _, sides = sided_label_map(classes, reg, 0.5)
    legs = [(leg.side, leg.mask) for leg in sides.legs]
    full = flip_check(bundle, channels, classes, legs, reg.classes, 1, "cpu")
    half = flip_check(bundle, channels, classes, legs, reg.classes, 2, "cpu")
    assert set(full) == set(half) == {"left", "right"}
    for side in full:
        for name in ("gastrocnemius_medial", "soleus", "tibialis_anterior", "tibia"):
            assert abs(full[side][name] - half[side][name]) < 0.03, (side, name)
            assert full[side][name] > 0.85


def test_a_bundle_that_averages_over_mirror_images_is_judged_on_single_passes(tmp_path):
    """Averaged over its own mirror image, a network's answer for the mirrored image is the mirror of its answer,
    so the agreement would read 1 for any network; the check then compares single passes, which are what the
    plain bundle's check compares."""
    out = tmp_path / "out"
    assert stages.ingest(SAMPLE, out) == 0
    study = StudyDir(out)
    plain = stages.bundle_cache().get(load_config("default")["segment"]["calf_bundle"])
    assert not plain.metadata.get("inference", {}).get("mirror_axes")
    averaged = copy.copy(plain)
    averaged.metadata = {**plain.metadata, "inference": {"mirror_axes": [0]}}
    inputs = calf_inputs(study.series(), study)
    channels, _ = network_inputs(plain.metadata["input_channels"], inputs, study.series())
    reg = registry("calf")
    agreement = {}
    for name, bundle in (("plain", plain), ("averaged", averaged)):
        classes = bundle.predict(channels)
        _, sides = sided_label_map(classes, reg, 0.5)
        legs = [(leg.side, leg.mask) for leg in sides.legs]
        agreement[name] = flip_check(bundle, channels, classes, legs, reg.classes, 2, "cpu")
    assert min(v for per in agreement["plain"].values() for v in per.values()) < 0.99
    for side, per in agreement["plain"].items():
        for structure, value in per.items():
            assert abs(agreement["averaged"][side][structure] - value) <= 0.003, (side, structure)
