"""Which images a calf bundle gets, by its input channels (pipeline.workflow.calf.network_inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import InternalError
from pipeline.core.layout import SeriesEntry, SeriesIndex
from pipeline.core.volume import Volume
from pipeline.io.nifti import save_volume
from pipeline.workflow.calf import CalfInputs, network_inputs


def _vol(value: float) -> Volume:
    return Volume(np.full((4, 3, 2), value, np.float32), np.eye(4))


def test_dixon_bundles_get_water_and_fat():
    inputs = CalfInputs(_vol(3.0), _vol(1.0), "scanner water/fat images")
    chans, how = network_inputs(["water", "fat"], inputs, SeriesIndex(None))
    assert [float(c.array[0, 0, 0]) for c in chans] == [3.0, 1.0] and "water" in how


def test_one_input_bundles_get_the_in_phase_signal(tmp_path):
    inputs = CalfInputs(_vol(3.0), _vol(1.0), "scanner water/fat images")
    (chan,), how = network_inputs(["image"], inputs, SeriesIndex(None))
    assert float(chan.array[0, 0, 0]) == 4.0 and "water + fat" in how
    save_volume(_vol(7.0), tmp_path / "volumes" / "calf_inphase.nii.gz")
    series = SeriesIndex(None, (SeriesEntry("calf_inphase", tmp_path / "volumes" / "calf_inphase.nii.gz"),))
    (chan,), how = network_inputs(["image"], inputs, series)
    assert float(chan.array[0, 0, 0]) == 7.0 and how == "in-phase image"


def test_unknown_channels_are_refused():
    with pytest.raises(InternalError):
        network_inputs(["t1"], CalfInputs(_vol(1.0), _vol(1.0), ""), SeriesIndex(None))


def test_one_input_bundles_get_the_anatomical_image_when_there_is_no_dixon():
    inputs = CalfInputs(None, None, "one anatomical series", _vol(9.0), "calf_t2")
    (chan,), how = network_inputs(["image"], inputs, SeriesIndex(None))
    assert float(chan.array[0, 0, 0]) == 9.0 and "calf_t2" in how
    with pytest.raises(InternalError):  # a Dixon bundle cannot take one weighted image
        network_inputs(["water", "fat"], inputs, SeriesIndex(None))
