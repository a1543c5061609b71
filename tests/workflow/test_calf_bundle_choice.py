"""Which calf bundle segments a study: by where its water and fat images come from."""

from __future__ import annotations

import numpy as np

from pipeline.core.config import load_config
from pipeline.core.volume import Volume
from pipeline.workflow.calf import CalfInputs, calf_bundle_name

CFG = {"calf_bundle": "dixon", "calf_single_contrast_bundle": "single", "calf_computed_water_fat_bundle": "computed"}


def _vol() -> Volume:
    return Volume(np.ones((4, 4, 2), np.float32), np.eye(4))


def test_scanner_water_and_fat_go_to_the_dixon_bundle():
    inputs = CalfInputs(_vol(), _vol(), "scanner Dixon", roles=("calf_water", "calf_fat"))
    assert not inputs.computed and calf_bundle_name(inputs, CFG) == "dixon"


def test_water_and_fat_computed_from_magnitudes_go_to_their_bundle():
    two_point = CalfInputs(_vol(), _vol(), "2-point Dixon", roles=("calf_inphase", "calf_outphase"))
    multi_echo = CalfInputs(_vol(), _vol(), "water/fat of the multi-echo fit")
    assert two_point.computed and multi_echo.computed
    assert calf_bundle_name(two_point, CFG) == calf_bundle_name(multi_echo, CFG) == "computed"


def test_one_anatomical_series_goes_to_the_single_contrast_bundle():
    inputs = CalfInputs(None, None, "one anatomical series", _vol(), "calf_anatomical", roles=("calf_anatomical",))
    assert not inputs.computed and calf_bundle_name(inputs, CFG) == "single"


def test_the_shipped_configuration_names_a_one_input_bundle_for_computed_water_and_fat():
    from pipeline.segment.bundle import load_bundle

    name = load_config("default")["segment"]["calf_computed_water_fat_bundle"]
    assert list(load_bundle(name).metadata["input_channels"]) == ["image"]
