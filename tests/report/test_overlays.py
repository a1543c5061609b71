"""QA overlays: display orientation from the affine (radiological convention) in several acquisition orientations,
side markers from world x, and pictures written as PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.report.overlays import (
    AXIAL_CODES,
    SAGITTAL_CODES,
    calf_montage,
    csa_plot,
    label_crop,
    side_markers,
    to_display,
)


def _marked_volume(affine: np.ndarray, world_xyz: np.ndarray, shape=(20, 22, 12)) -> Volume:
    """A volume whose one bright voxel sits nearest the world point ``world_xyz``."""
    arr = np.zeros(shape, dtype=np.float32)
    ijk = np.rint(np.linalg.solve(affine[:3, :3], world_xyz - affine[:3, 3])).astype(int)
    arr[tuple(ijk)] = 1.0
    return Volume(arr, affine)


def _affines() -> dict[str, np.ndarray]:
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    perm = np.zeros((4, 4))
    perm[:3, :3] = [[0, 1.0, 0], [-1.0, 0, 0], [0, 0, 2.0]]  # i -> -y (posterior), j -> +x (right)
    perm[3, 3] = 1
    out = {"RAS": ras, "LPS": lps, "permuted": perm}
    for a in out.values():
        a[:3, 3] = -a[:3, :3] @ np.array([9.5, 10.5, 5.5])  # volume centred on the world origin
    return out


@pytest.mark.parametrize("name", ["RAS", "LPS", "permuted"])
def test_axial_display_puts_patient_right_on_image_left_and_anterior_up(name):
    aff = _affines()[name]
    # a voxel 6 mm to the patient's right (+x) and 5 mm anterior (+y)
    v = _marked_volume(aff, np.array([6.0, 5.0, 0.0]), shape=(20, 22, 12) if name != "permuted" else (22, 20, 12))
    d = to_display(v, AXIAL_CODES)
    r, c, _ = np.argwhere(d.array > 0)[0]
    assert c < d.shape[1] / 2, "patient right must be on the image's left"
    assert r < d.shape[0] / 2, "anterior must be up"
    assert side_markers(d) == ("R", "L")


@pytest.mark.parametrize("name", ["RAS", "LPS"])
def test_sagittal_display_superior_up_anterior_left(name):
    aff = _affines()[name]
    v = _marked_volume(aff, np.array([0.0, 6.0, 8.0]))  # anterior and superior
    d = to_display(v, SAGITTAL_CODES)
    r, c, _ = np.argwhere(d.array > 0)[0]
    assert r < d.shape[0] / 2 and c < d.shape[1] / 2


def test_calf_montage_draws_each_leg_on_its_radiological_side(tmp_path):
    """Soleus of the patient's right leg, tibia of the left: the soleus colour lies left of the tibia colour in the
    picture (the montage crops to the labelled legs, so the two legs are placed against each other)."""
    reg = registry("calf")
    aff = np.diag([-1.0, -1.0, 3.0, 1.0])  # LPS-ordered array, as many DICOM stacks
    img = np.full((80, 40, 6), 50.0, dtype=np.float32)
    lab = np.zeros(img.shape, dtype=np.int16)
    # array i increases to the patient's LEFT here (x = -i); the right leg sits at small i
    lab[8:24, 12:28, :] = reg.label_id("soleus_right")
    lab[56:72, 12:28, :] = reg.label_id("tibia_left")
    v, lv = Volume(img, aff), Volume(lab, aff)
    p = calf_montage(v, lv, reg, [0.5], tmp_path / "m.png", dpi=150)
    rgb = np.asarray(Image.open(p).convert("RGB")).astype(int)
    body = rgb[: int(rgb.shape[0] * 0.8)]  # leave out the legend at the bottom

    def columns(structure: str) -> np.ndarray:
        colour = np.array([int(reg.structures[structure]["color"][i:i + 2], 16) for i in (1, 3, 5)])
        hits = np.argwhere(np.abs(body - colour).sum(axis=2) < 60)
        assert len(hits) > 10
        return hits[:, 1]

    assert np.median(columns("soleus")) < np.median(columns("tibia"))


def test_label_crop_keeps_the_labelled_legs_with_a_margin():
    lab = np.zeros((120, 300, 4), np.int16)
    lab[30:60, 20:80, 1] = 5
    lab[35:70, 200:260, 2] = 7
    rows, cols = label_crop(Volume(lab, np.diag([0.5, 0.5, 5.0, 1.0])), [1, 2], margin_mm=5.0)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (20, 80, 10, 270)
    assert label_crop(Volume(lab, np.eye(4)), [0]) == (slice(0, 120), slice(0, 300))


def test_csa_plot_from_slices_rows(tmp_path):
    rows = [{"z_mm": str(z), "side": s, "muscle": "soleus", "csa_mm2": str(100 + z)} for z in range(5)
            for s in ("left", "right")]
    p = csa_plot(rows, registry("calf"), tmp_path / "csa.png", dpi=50)
    assert Image.open(p).format == "PNG"


def test_csa_plot_draws_a_side_whose_qc_failed_grey(tmp_path):
    """The right soleus failing QC: its curve is grey, not the right side's blue; the left keeps its orange."""
    rows = [{"z_mm": str(z), "side": s, "muscle": "soleus", "csa_mm2": str(100 + 40 * z)} for z in range(20)
            for s in ("left", "right")]
    plain = csa_plot(rows, registry("calf"), tmp_path / "plain.png", dpi=100)
    gated = csa_plot(rows, registry("calf"), tmp_path / "gated.png", dpi=100,
                     verdicts={("soleus", "right"): "fail", ("soleus", "left"): "pass"})
    blue, orange, grey = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x99, 0x99, 0x99)
    assert _has_colour(plain, blue, 50) and not _has_colour(plain, grey, 50)
    assert _has_colour(gated, grey, 50) and _has_colour(gated, orange, 50)
    # the legend's blue line stays; the curve's blue pixels are gone
    assert _count_colour(gated, blue) < _count_colour(plain, blue) / 2


def test_outlines_traced_in_their_box_draw_the_pixels_of_whole_grid_outlines(tmp_path):
    """Label outlines (pieces, holes, touching the edges) traced in their box give the picture drawn from the whole
    slice, pixel for pixel."""
    import matplotlib.pyplot as plt

    from pipeline.report.overlays import _contour

    rng = np.random.default_rng(5)
    labels = np.zeros((60, 48), np.int16)
    for lid in range(1, 9):
        r, c = rng.integers(0, 50), rng.integers(0, 40)
        labels[r:r + rng.integers(2, 15), c:c + rng.integers(2, 15)] = lid
    labels[rng.random(labels.shape) < 0.05] = 0
    labels[0:5, 40:48] = 9

    def draw(path, whole: bool):
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(labels, extent=[0, 48 * 0.7, 60 * 0.9, 0])
        for lid in range(1, 10):
            mask = labels == lid
            if whole:
                ys, xs = (np.arange(60) + 0.5) * 0.9, (np.arange(48) + 0.5) * 0.7
                ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=["red"], linewidths=0.8)
            else:
                _contour(ax, mask, (0.9, 0.7), "red")
        ax.axis("off")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return np.asarray(Image.open(path))

    assert np.array_equal(draw(tmp_path / "box.png", False), draw(tmp_path / "whole.png", True))


def _count_colour(path, rgb: tuple[int, int, int]) -> int:
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(img - np.array(rgb)).sum(axis=-1) < 6).sum())


def _has_colour(path, rgb: tuple[int, int, int], min_pixels: int = 500) -> bool:
    """Whether at least ``min_pixels`` pixels (a bar, not the anti-aliased edge of a line) have the colour ``rgb``."""
    return _count_colour(path, rgb) >= min_pixels


def test_asymmetry_of_a_structure_whose_qc_failed_is_grey_not_flagged(tmp_path):
    """A flagged volume asymmetry (30 %) is a red bar; the same asymmetry of a muscle whose segmentation failed QC in a
    leg (and of the groups that hold it) is a grey hatched bar, so the picture flags nothing the rules held back."""
    from pipeline.report.overlays import asymmetry_chart
    from pipeline.workflow.report import failed_calf_structures

    creg = registry("calf")
    values = {"calf.asymmetry.gastrocnemius_medial.volume_ai_pct": 30.0,
              "calf.asymmetry.triceps_surae.volume_ai_pct": 12.0,
              "calf.asymmetry.tibialis_anterior.volume_ai_pct": 2.0,
              "calf.right.gastrocnemius_medial.qc_status": "fail", "calf.left.gastrocnemius_medial.qc_status": "pass",
              "calf.right.tibialis_anterior.qc_status": "pass", "calf.left.tibialis_anterior.qc_status": "review"}
    failed = failed_calf_structures(values, creg)
    assert {"gastrocnemius_medial", "triceps_surae", "superficial_posterior"} <= failed
    assert "tibialis_anterior" not in failed and "anterior" not in failed
    names = [*creg.structures, *creg.groups()]
    plain = asymmetry_chart(values, names, 10.0, tmp_path / "plain.png")
    gated = asymmetry_chart(values, names, 10.0, tmp_path / "gated.png", failed=failed)
    red, grey = (0xC0, 0x39, 0x2B), (0xBB, 0xBB, 0xBB)
    assert _has_colour(plain, red) and not _has_colour(plain, grey)
    assert _has_colour(gated, grey) and not _has_colour(gated, red)


def test_canal_chart_draws_a_level_whose_qc_failed_grey(tmp_path):
    """L4-L5 failing QC: its DSCA and recess bars are grey and hatched instead of blue / red / light blue."""
    from pipeline.report.overlays import canal_chart

    levels = ["L3-L4", "L4-L5", "L5-S1"]
    values = {f"spine.{lv}.dsca_mm2": 150.0 for lv in levels}
    values |= {f"spine.{lv}.{s}.lateral_recess_depth_mm": 4.0 for lv in levels for s in ("left", "right")}
    plain = canal_chart(values, levels, tmp_path / "plain.png")
    gated = canal_chart(values, levels, tmp_path / "gated.png", failed={"L4-L5"})
    grey, blue = (0xBB, 0xBB, 0xBB), (0x5B, 0x7F, 0xA6)
    assert not _has_colour(plain, grey) and _has_colour(gated, grey)
    assert _count_colour(gated, blue) < _count_colour(plain, blue) * 0.8
