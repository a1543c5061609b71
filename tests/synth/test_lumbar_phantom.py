"""Lumbar phantom: canal truth recovered from the label maps, shared patient geometry of the stacks, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.labels import registry
from pipeline.synth.lumbar import LEVELS, LumbarSpec, generate_lumbar, lumbar_spec_for_case

REG = registry("spine")


@pytest.fixture(scope="module")
def nmh():
    spec = lumbar_spec_for_case("nmh", np.random.default_rng(3))
    spec.sag_matrix = 200
    return generate_lumbar(spec, seed=3)


def _central_sac_area(series) -> float:
    lab, vol = series.labels, series.volume
    k = lab.shape[2] // 2
    px = np.linalg.norm(vol.affine[:3, 0]) * np.linalg.norm(vol.affine[:3, 1])
    return float(np.count_nonzero(lab.array[:, :, k] == REG.label_id("dural_sac")) * px)


def test_dsca_from_axial_labels_within_3_percent(nmh):
    for s in nmh.series[1:]:
        level = nmh.truth["axial_levels"][s.role]
        truth = nmh.truth["levels"][level]["dsca_mm2"]
        assert _central_sac_area(s) == pytest.approx(truth, rel=0.03), level


def test_axial_stacks_are_parallel_to_their_disc(nmh):
    for s in nmh.series[1:]:
        level = nmh.truth["axial_levels"][s.role]
        normal = np.array(nmh.truth["levels"][level]["disc_normal_ras"])
        step = s.volume.affine[:3, 2] / np.linalg.norm(s.volume.affine[:3, 2])
        assert abs(float(step @ normal)) > 0.999
        # the disc centre lies inside that disc's label in the axial stack and in the sagittal stack
        centre = np.array(nmh.truth["levels"][level]["disc_center_ras"])
        for series in (s, nmh.series[0]):
            ijk = np.rint(series.labels.world_to_voxel([centre])[0]).astype(int)
            assert series.labels.array[tuple(ijk)] == REG.label_id(f"disc_{level.replace('-', '_')}")


def test_sagittal_ap_diameter_at_discs(nmh):
    sag = nmh.series[0]
    lab = sag.labels
    sac = REG.label_id("dural_sac")
    for level in LEVELS:
        lv = nmh.truth["levels"][level]
        centre = np.array(lv["disc_center_ras"])
        posterior = np.cross(np.array([1.0, 0, 0]), lv["disc_normal_ras"])  # in the disc plane, pointing posterior
        assert posterior[1] < 0
        ts = np.arange(0, 60, 0.05)
        pts = centre[None] + ts[:, None] * posterior[None]
        ijk = np.rint(lab.world_to_voxel(pts)).astype(int)
        ok = np.all((ijk >= 0) & (ijk < lab.shape), axis=1)
        inside = np.zeros(len(ts), bool)
        inside[ok] = lab.array[tuple(ijk[ok].T)] == sac
        ap = inside.sum() * 0.05
        assert ap == pytest.approx(lv["ap_diameter_mm"], abs=1.2), level


def test_index_case_knobs():
    spec = lumbar_spec_for_case("nmh", np.random.default_rng(0))
    l45 = spec.levels["L4-L5"]
    assert l45.dsca_mm2 < 100 and l45.recess_mm["right"] < l45.recess_mm["left"]
    assert all(spec.levels[lv].dsca_mm2 > 150 for lv in LEVELS if lv != "L4-L5")
    control = lumbar_spec_for_case("control", np.random.default_rng(0))
    assert all(control.levels[lv].dsca_mm2 > 150 for lv in LEVELS)


def test_deterministic_and_seed_dependent():
    spec = LumbarSpec(sag_matrix=96, sag_slices=5, ax_matrix=64, ax_slices=3, ax_levels=("L4-L5",))
    a = generate_lumbar(spec, seed=1, fast=True)
    b = generate_lumbar(spec, seed=1, fast=True)
    c = generate_lumbar(spec, seed=2, fast=True)
    assert a.series[0].volume.array.tobytes() == b.series[0].volume.array.tobytes()
    assert a.series[0].volume.array.tobytes() != c.series[0].volume.array.tobytes()


def test_disc_margin_borders_the_epidural_space_in_the_recess(nmh):
    """Behind the posterior disc margin, across the canal and its lateral recesses, lie epidural fat, roots or
    facet (or the sac itself) -- never a band of unlabelled soft tissue with the annulus's T2 signal, which would hide the disc margin
    (and so the lateral recess depth) on the image."""
    from pipeline.io.nifti import to_closest_canonical

    allowed = {REG.label_id(n) for n in ("epidural_fat", "nerve_root", "posterior_elements", "dural_sac")}
    for s in nmh.series[1:]:
        level = nmh.truth["axial_levels"][s.role]
        lab = np.asarray(to_closest_canonical(s.labels)[0].array)
        img = np.asarray(to_closest_canonical(s.volume)[0].array, float)
        k = lab.shape[2] // 2
        disc = lab[:, :, k] == REG.label_id(f"disc_{level.replace('-', '_')}")
        sac_cols = np.nonzero((lab[:, :, k] == REG.label_id("dural_sac")).any(axis=1))[0]
        px = float(np.linalg.norm(s.volume.affine[:3, 0]))
        reach = int(round(6.0 / px))  # the sac and 6 mm of recess on each side (the canal is 8 mm wider)
        behind, margin = [], []
        for i in range(sac_cols.min() - reach, sac_cols.max() + reach + 1):
            rows = np.nonzero(disc[i])[0]  # canonical RAS: +j is anterior, so the back of the disc is the lowest j
            j = rows.min()
            behind.append(lab[i, j - 1, k])
            margin.append(img[i, j + 1, k] - img[i, j - 2, k])
        assert set(behind) <= allowed, (level, sorted(set(behind)))
        # the disc margin shows: the first millimetre behind the disc is darker or brighter than the annulus
        assert np.median(np.abs(margin)) > 0.05 * img[:, :, k].max(), level
