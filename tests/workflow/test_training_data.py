"""Phantom training data for the spine network: every series of each phantom, in seed order whatever the number of
generating processes, and rendered with partial volume unless ``fast`` is asked for."""

from __future__ import annotations

import numpy as np

from pipeline.core.labels import registry
from pipeline.workflow.training import synthetic_cases


def synthetic_spine_cases(seeds: list[int], fast: bool, workers: int = 1) -> list:
    return list(synthetic_cases("spine", seeds, fast=fast, workers=workers))


def test_parallel_generation_gives_the_same_cases_in_seed_order():
    one = synthetic_spine_cases([5, 6], fast=True, workers=1)
    two = synthetic_spine_cases([5, 6], fast=True, workers=2)
    assert len(one) == len(two) == 8  # a sagittal and three axial stacks per phantom
    for (img_a, lab_a), (img_b, lab_b) in zip(one, two):
        assert np.array_equal(np.asarray(img_a[0].array), np.asarray(img_b[0].array))
        assert np.array_equal(np.asarray(lab_a.array), np.asarray(lab_b.array))
        assert np.allclose(img_a[0].affine, img_b[0].affine)


def test_supersampled_rendering_has_partial_volume_at_the_sac_border():
    """Fast rendering samples one point per voxel: a voxel on the dural sac's border is either CSF or not. The
    supersampled phantom averages 8 points, so some border voxels take values between CSF and the tissue beside it.
    Seed 2's sac holds no sedimented roots (``LumbarSpec.cauda_sediment`` 0), whose own signal would darken the
    border voxels beside them in either rendering."""
    def border_values(fast: bool) -> np.ndarray:
        img, lab = synthetic_spine_cases([2], fast=fast)[0]  # the sagittal stack
        a, c = np.asarray(img[0].array, float), np.asarray(lab.array)
        sac = c == registry("spine").class_id("dural_sac")
        inner = sac & np.roll(sac, 1, 0) & np.roll(sac, -1, 0)
        csf = np.median(a[inner])
        edge = sac ^ inner
        return a[edge] / csf

    assert np.mean(border_values(True) < 0.9) < 0.05
    assert np.mean(border_values(False) < 0.9) > 0.2
