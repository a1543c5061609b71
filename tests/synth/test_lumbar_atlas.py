"""The independent lumbar phantom: its truth is the geometry it renders (sac areas and diameters, disc centres),
checked against a closed form and against its own class map, away from the full (slow) rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.labels import registry
from pipeline.synth.lumbar_atlas import LEVELS, AtlasLumbarSpec, AtlasSpine, sac_truth

SAC = registry("spine").class_id("dural_sac")
DISC = registry("spine").class_id("disc")


def _spine(seed: int, **level_changes) -> AtlasSpine:
    spec = AtlasLumbarSpec.random(np.random.default_rng([seed, 17]))
    for lv in LEVELS:
        for key, value in level_changes.items():
            setattr(spec.levels[lv], key, value)
    return AtlasSpine(spec, np.random.default_rng(seed))


def _plane(spine: AtlasSpine, level: str, step: float, half: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """World points of a square grid in the disc's mid-plane, centred behind the disc, and the class there."""
    s = spine.disc_s[level]
    ant, down = spine.frame(s)
    u = np.arange(-half, half, step)
    uu, vv = np.meshgrid(u, u, indexing="ij")
    centre = spine.world(s, a=-25.0)
    pts = centre + uu[..., None] * np.array([1.0, 0.0, 0.0]) + vv[..., None] * ant
    return pts, spine.classify(pts)[0]


def test_the_sac_area_is_the_superellipse_area_when_nothing_indents_it():
    """With no flavum indentation and no disc bulge or protrusion, the truth area equals the closed form of a
    superellipse |x/r_x|^q + |y/r_a|^q <= 1: 4 r_x r_a Gamma(1 + 1/q)^2 / Gamma(1 + 2/q)."""
    spine = _spine(3, flavum_mm=0.0, bulge_mm=0.0, protrusion=("left", 0.0))
    for lv in LEVELS:
        p = spine.spec.levels[lv]
        q, rx, ra = p.shape_exponent, p.width_mm / 2, p.ap_mm / 2
        closed = 4 * rx * ra * math.gamma(1 + 1 / q) ** 2 / math.gamma(1 + 2 / q)
        area, ap = sac_truth(spine, lv)
        assert area == pytest.approx(closed, rel=0.02), lv
        assert ap == pytest.approx(p.ap_mm, abs=0.1), lv


@pytest.mark.parametrize("seed", [1, 2])
def test_the_rendered_sac_in_the_disc_plane_has_the_truth_area(seed: int):
    """The class map's sac in the disc's mid-plane (0.4 mm grid, the same local coordinates the images use) covers
    the truth area: a wrong projection on the centre line or a wrong disc plane would break it."""
    spine = _spine(seed)
    for lv in LEVELS:
        _, cls = _plane(spine, lv, 0.4)
        area = float((cls == SAC).sum()) * 0.4 ** 2
        truth, _ = sac_truth(spine, lv)
        assert area == pytest.approx(truth, rel=0.05, abs=3.0), lv


def test_each_disc_lies_where_the_truth_puts_it():
    """Disc class surrounds each truth disc centre, and the plane above the disc mid-plane by half the disc
    height plus 3 mm is vertebral body, not disc."""
    spine = _spine(4)
    for lv in LEVELS:
        centre = spine.world(spine.disc_s[lv])
        assert spine.classify(centre[None])[0][0] == DISC, lv
        _, down = spine.frame(spine.disc_s[lv])
        above = centre - down * (spine.spec.levels[lv].disc_height_mm / 2 + 3.0)
        assert spine.classify(above[None])[0][0] == registry("spine").class_id("vertebral_body"), lv


def test_spine_coordinates_invert_the_world_mapping_near_the_spine():
    """Within the radius of curvature of the centre line (behind the lumbosacral turn that is about 50 mm) the
    projection finds the point's own spine coordinates."""
    spine = _spine(5)
    for s, a, x in [(0.0, 0.0, 0.0), (60.0, -30.0, 8.0), (150.0, 20.0, -12.0), (200.0, -30.0, 3.0)]:
        got = np.array([float(v[0]) for v in spine.local(spine.world(s, a, x)[None])])
        assert np.allclose(got, [s, a, x], atol=0.25), (s, a, x, got)  # the line is sampled every 0.25 mm
