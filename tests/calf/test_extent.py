"""Folded-in anatomy at the distal end of a calf slab (pipeline.calf.extent): found where a knee folds onto the ankle
slices, never on a whole calf of either phantom generator."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.calf.extent import distal_fold, drop_dim_slab_ends, drop_distal_fold, without_folds
from pipeline.calf.metrics import slice_axis, slice_positions_mm
from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.synth.calf import CalfSpec, generate_calf
from pipeline.synth.calf_atlas import AtlasSpec, generate_atlas_calf

REG = registry("calf")


@pytest.fixture(scope="module", params=["project", "atlas"])
def whole_calf(request) -> tuple[Volume, Volume]:
    """True labels and the in-phase image of a whole calf, knee to ankle, 10 mm slices, from each phantom
    generator."""
    if request.param == "project":
        ph = generate_calf(CalfSpec(n_slices=36, slice_mm=10.0, in_plane_mm=1.5, t_start=0.03), seed=5, fast=True)
    else:
        ph = generate_atlas_calf(AtlasSpec(t_start=0.03, t_end=0.97, slice_mm=10.0, in_plane_mm=1.5, supersample=1),
                                 seed=2)
    return ph.labels, ph.volume("calf_inphase")


@pytest.fixture(scope="module")
def knee_to_ankle(whole_calf) -> Volume:
    """True labels of :func:`whole_calf`."""
    return whole_calf[0]


def _distal_first(labels: Volume) -> np.ndarray:
    """The label array's slices ordered from the distal end (low world z)."""
    axis = slice_axis(labels)
    view = np.moveaxis(np.asarray(labels.array), axis, 0)
    z = slice_positions_mm(labels, axis)
    return view if z[-1] > z[0] else view[::-1]


def test_a_whole_calf_loses_nothing(knee_to_ankle):
    out, folds = drop_distal_fold(knee_to_ankle, REG, 0.5, 0.1, 0.3)
    assert folds == [] and out is knee_to_ankle


@pytest.mark.parametrize("n", [4, 7])
def test_a_knee_folded_onto_the_ankle_slices_is_left_out(knee_to_ankle, n):
    arr = np.asarray(knee_to_ankle.array).copy()
    labels = knee_to_ankle.with_array(arr)
    view = _distal_first(labels)
    view[:n] = view[-n:].copy()  # the slab's proximal end again at its distal end, as wrap-around puts it
    out, folds = drop_distal_fold(labels, REG, 0.5, 0.1, 0.3)
    assert sorted(f.side for f in folds) == ["left", "right"]
    assert all(len(f.slices) == n for f in folds)
    kept = _distal_first(out)
    assert not kept[:n].any()  # every label of both legs gone there
    assert np.array_equal(kept[n:], view[n:])  # and nothing else touched
    assert "wrap-around" in folds[0].describe()
    legs = without_folds([(f.side, np.ones(arr.shape, bool)) for f in folds], folds, slice_axis(labels))
    assert all(int((~m).sum()) == n * arr.size // arr.shape[slice_axis(labels)] for _, m in legs)


def test_a_fold_seen_in_one_leg_is_left_out_of_both():
    """Wrap-around folds the whole slab: when only one leg's fold is labelled as calf muscle, the other leg loses the
    same slices, so that the fold does not turn into a left/right difference."""
    labels = generate_calf(CalfSpec(n_slices=36, slice_mm=10.0, in_plane_mm=1.5, t_start=0.03), seed=5,
                           fast=True).labels
    arr = np.asarray(labels.array).copy()
    left = np.isin(arr, [REG.sided_id(n, "left") for n in REG.classes[1:]])
    view, folded = _distal_first(labels.with_array(arr)), arr.copy()
    fold_view = _distal_first(labels.with_array(folded))
    fold_view[:5] = np.where(_distal_first(labels.with_array(left))[-5:], view[-5:], view[:5])
    out, folds = drop_distal_fold(labels.with_array(folded), REG, 0.5, 0.1, 0.3)
    assert sorted(f.side for f in folds) == ["left", "right"] and all(len(f.slices) == 5 for f in folds)
    assert not _distal_first(out)[:5].any()


def test_distal_fold_needs_the_gastrocnemius_to_end_and_come_back():
    muscle = np.array([0.2, 0.7, 0.8, 0.4, 0.3, 0.6, 0.9, 1.0])
    # the gastrocnemius never falls under 10 % between the two runs: one calf with a poor slice, nothing dropped
    assert distal_fold(muscle, np.array([0.3, 0.6, 0.7, 0.3, 0.2, 0.5, 0.9, 1.0]), 0.5, 0.1, 0.3) == 0
    # it ends and comes back: the distal run and the slices up to where it had ended are dropped
    assert distal_fold(muscle, np.array([0.3, 0.6, 0.2, 0.3, 0.05, 0.5, 0.9, 1.0]), 0.5, 0.1, 0.3) == 4
    # muscle comes back but the gastrocnemius does not (a foot, or the soleus alone): nothing dropped
    assert distal_fold(muscle, np.array([0.0, 0.1, 0.2, 0.1, 0.05, 0.5, 0.9, 1.0]), 0.5, 0.1, 0.3) == 0
    assert distal_fold(np.zeros(5), np.zeros(5), 0.5, 0.1, 0.3) == 0


def test_a_whole_calf_of_even_signal_keeps_every_slice(whole_calf):
    labels, image = whole_calf
    out, dim = drop_dim_slab_ends(labels, image, REG, 0.5, 0.1)
    assert dim == [] and out is labels


def test_the_dim_slices_at_a_slab_edge_are_left_out_of_both_legs(whole_calf):
    """The signal falling to 0.2-0.4 of the rest over the three most proximal slices (a slab profile's edge): those
    slices lose their labels in both legs and are reported once per leg; slices already left out are not reported
    again."""
    labels, image = whole_calf
    axis = slice_axis(labels)
    z = slice_positions_mm(labels, axis)
    profile = np.ones(len(z))
    top = np.argsort(z)[-3:]
    profile[top] = [0.4, 0.3, 0.2]
    shape = [1, 1, 1]
    shape[axis] = len(z)
    dimmed = image.with_array(np.asarray(image.array, np.float32) * profile.reshape(shape))
    out, dim = drop_dim_slab_ends(labels, dimmed, REG, 0.5, 0.1)
    assert sorted(f.side for f in dim) == ["left", "right"]
    assert all(sorted(f.slices) == sorted(int(k) for k in top) and f.end == "proximal" for f in dim)
    assert "too dim" in dim[0].describe()
    kept = np.moveaxis(np.asarray(out.array), axis, 0)
    assert not kept[top].any()
    rest = np.setdiff1d(np.arange(len(z)), top)
    assert np.array_equal(kept[rest], np.moveaxis(np.asarray(labels.array), axis, 0)[rest])
    _, again = drop_dim_slab_ends(labels, dimmed, REG, 0.5, 0.1, already=dim)
    assert again == []
