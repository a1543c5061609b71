"""Levels counted on a second network's bones and discs (``segment.spine_level_bundle``) while the canal comes from
the configured spine network: which map each part of the result is taken from."""

from __future__ import annotations

import numpy as np

from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.io.nifti import to_closest_canonical
from pipeline.synth.lumbar import LumbarSpec, generate_lumbar
from pipeline.workflow.spine import segment_series

REG = registry("spine")


class FixedNetwork:
    """Stands in for a bundle whose class map of the sagittal image is ``classes`` (a network's output given, so
    that the test says which network's map each part of the result comes from)."""

    def __init__(self, classes: Volume, sac_probability: float):
        self.classes = classes
        self.sac_probability = sac_probability
        self.calls = 0

    def predict(self, channels: list[Volume], device: str = "cpu") -> Volume:
        self.calls += 1
        return self.classes

    def predict_soft(self, channels: list[Volume], classes: tuple[str, ...], device: str = "cpu"
                     ) -> tuple[Volume, dict[str, Volume]]:
        self.calls += 1
        arr = np.asarray(self.classes.array)
        soft = {c: self.classes.with_array(np.where(arr == REG.class_id(c), self.sac_probability, 0.0))
                for c in classes}
        return self.classes, soft


def _phantom() -> tuple[Volume, Volume]:
    ph = generate_lumbar(LumbarSpec(ax_levels=()), seed=1, fast=True)
    image = to_closest_canonical(ph.series[0].volume)[0]
    truth = to_closest_canonical(ph.series[0].labels)[0]
    return image, REG.class_map(truth)


def test_levels_are_counted_on_the_level_networks_bones_and_the_canal_is_the_canal_networks():
    """The canal network calls the sacrum 'vertebral body' (as the configured network does on the independent atlas
    phantoms): alone, it leaves the levels unnamed. The level network finds the sacrum but no dural sac. Together
    the levels are named from the sacrum, and the dural sac of the label map and its probability are the canal
    network's."""
    image, classes = _phantom()
    arr = np.asarray(classes.array)
    sacrum, body, sac = (REG.class_id(n) for n in ("sacrum", "vertebral_body", "dural_sac"))
    canal_net = FixedNetwork(classes.with_array(np.where(arr == sacrum, body, arr).astype(arr.dtype)), 0.9)
    level_net = FixedNetwork(classes.with_array(np.where(arr == sac, 0, arr).astype(arr.dtype)), 0.1)

    alone = segment_series(canal_net, image, [])
    assert list(alone.levels.discs) == ["disc_1", "disc_2", "disc_3", "disc_4", "disc_5"]

    both = segment_series(canal_net, image, [], level_bundle=level_net)
    assert list(both.levels.discs) == ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2"]
    assert level_net.calls == 1
    out = np.asarray(both.levels.labels.array)
    assert np.array_equal(out == REG.label_id("dural_sac"), arr == sac)
    assert float(np.asarray(both.sac_sag.array).max()) == 0.9
    assert np.array_equal(out == REG.label_id("sacrum_S1"), arr == sacrum)
