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


def test_two_point_dixon_is_computed_once_and_each_caller_gets_its_own_copy(tmp_path):
    from pipeline.calf.dixon import two_point_dixon
    from pipeline.workflow.calf import calf_inputs

    rng = np.random.default_rng(0)
    ip, op = (Volume(rng.uniform(0, 100, (4, 3, 2)).astype(np.float32), np.eye(4)) for _ in range(2))
    for role, vol in (("calf_inphase", ip), ("calf_outphase", op)):
        save_volume(vol, tmp_path / "volumes" / f"{role}.nii.gz")
    series = SeriesIndex(None, tuple(SeriesEntry(r, tmp_path / "volumes" / f"{r}.nii.gz")
                                     for r in ("calf_inphase", "calf_outphase")))
    first = calf_inputs(series)
    assert first is not None and first.water is not None and first.fat is not None
    want = two_point_dixon(ip, op)
    assert np.array_equal(first.water.array, want[0].array) and np.array_equal(first.fat.array, want[1].array)
    first.water.array[:] = -1.0
    again = calf_inputs(series)
    assert again is not None and again.water is not None
    assert np.array_equal(again.water.array, want[0].array) and again.water.meta == want[0].meta | {
        "source": str(tmp_path / "volumes" / "calf_inphase.nii.gz")}
    save_volume(op.with_array(op.array / 2), tmp_path / "volumes" / "calf_outphase.nii.gz")  # a new file
    third = calf_inputs(series)
    assert third is not None and third.fat is not None
    assert np.array_equal(third.fat.array, two_point_dixon(ip, op.with_array(op.array / 2))[1].array)
