"""Bank subjects from a reference annotation (pipeline.workflow.calf_reference), subject weights of the
contrast-randomised sampler, and the reference Dice script (scripts/reference_dice.py); small synthetic arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume, save_volume
from pipeline.segment.synthseg import SynthSampler
from pipeline.synth.calf import TISSUE_IDS as T
from pipeline.workflow.calf_reference import (
    muscle_borders,
    reference_bank_subjects,
    reference_images,
    tissue_maps,
)
from pipeline.workflow.calf_synthseg import load_bank_groups, main, subject_weights, write_subject
from tests.scripts_module import load_script

REG = registry("calf")
GM, SOL, TIB, FAT = (REG.class_id(n) for n in ("gastrocnemius_medial", "soleus", "tibia", "subcutaneous_fat"))
#: RAS, 1 x 1 x 5 mm, world x = 0 between columns 39 and 41
AFFINE = np.diag([1.0, 1.0, 5.0, 1.0])
AFFINE[0, 3] = -40.0


def _leg(n: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A round leg: fat ring, two muscles (GM left half, SOL right half), a tibia with a dark cortex, a small bright
    unannotated blob and a large dark one; in-phase and opposed-phase images (muscle 100, fat 200)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    r = np.hypot(i - n / 2, j - n / 2)
    classes = np.zeros((n, n), np.uint8)
    classes[r <= 22] = FAT
    classes[r <= 17] = GM
    classes[(r <= 17) & (i >= n // 2)] = SOL
    bone = np.hypot(i - 24, j - 12) <= 4
    classes[bone] = TIB
    ip = np.where(classes > 0, 100.0, 0.0)
    ip[classes == FAT] = 200.0
    ip[bone] = 10.0
    ip[np.hypot(i - 24, j - 12) <= 2] = 200.0  # marrow
    classes[30:32, 30:32] = 0  # small unannotated blob inside the leg (4 voxels, bright)
    ip[30:32, 30:32] = 180.0
    classes[14:24, 26:36] = 0  # large unannotated blob (100 voxels, 39 mm2)
    ip[14:24, 26:36] = 150.0
    ip[16, 20] = 250.0  # bright voxel inside GM
    op = ip.copy()
    op[28, 14] = 20.0  # dark in opposed phase inside SOL
    return classes, ip, op


def test_tissue_maps_follow_classes_and_images():
    classes, ip, op = _leg()
    tissue, ff = tissue_maps(classes, ip, op, 0.625, p995=200.0)
    assert tissue[16, 20] == T["fascia"] and ff[16, 20] == pytest.approx(0.9)  # brighter than the muscle
    assert tissue[28, 14] == T["fascia"]  # dark in opposed phase
    assert tissue[20, 20] == T["muscle"] and ff[20, 20] == pytest.approx(0.03)
    # one voxel line on the GM / SOL border, on every row of it
    border = (tissue == T["fascia"]) & np.isin(classes, [GM, SOL])
    assert border[23, 38] and not border[22, 38] and not border[24, 38]
    # skin: the outermost fat only
    fat = classes == FAT
    assert tissue[24, 2] == T["skin"] and tissue[24, 4] == T["subcutaneous_fat"] and ff[24, 4] == pytest.approx(0.95)
    assert (tissue[fat] == T["skin"]).mean() < 0.5
    assert tissue[24, 9] == T["cortex"] and tissue[24, 12] == T["marrow"]
    assert tissue[30, 30] == T["vessel"] and tissue[17, 31] == T["subcutaneous_fat"]
    assert tissue[0, 0] == T["background"] and ff[0, 0] == 0
    assert set(np.unique(classes[tissue == T["fascia"]])) <= {GM, SOL}


def test_without_opposed_phase_only_bright_voxels_are_intramuscular_fat():
    classes, ip, _ = _leg()
    tissue, _ = tissue_maps(classes, ip, None, 0.625, p995=200.0)
    assert tissue[16, 20] == T["fascia"] and tissue[28, 14] == T["muscle"]


def test_muscle_borders_are_one_voxel_wide():
    c = np.zeros((6, 6), np.uint8)
    c[:, :3], c[:, 3:] = GM, SOL
    c[5] = FAT  # no line between a muscle and fat
    line = muscle_borders(c, [GM, SOL])
    assert line[:5, 2].all() and line.sum() == 5


def _volumes(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A label map (:data:`AFFINE`) with a leg on each side of slice 1 and the x > 0 one (the patient's right, RAS+)
    also on slice 3, and an in-phase image."""
    lab = np.zeros((80, 40, 5), np.uint8)
    img = np.zeros(lab.shape, np.float32)
    i, j = np.meshgrid(np.arange(80), np.arange(40), indexing="ij")
    for cx, zs in ((60, (1, 3)), (20, (1,))):
        r = np.hypot(i - cx, j - 20)
        for z in zs:
            lab[:, :, z][r <= 10] = FAT
            lab[:, :, z][r <= 8] = SOL
            img[:, :, z][r <= 10] = 100.0
    save_volume(Volume(lab, AFFINE), tmp_path / "labels.nii.gz")
    save_volume(Volume(img, AFFINE), tmp_path / "ip.nii.gz")
    return tmp_path / "labels.nii.gz", [tmp_path / "ip.nii.gz"]


def test_reference_bank_subjects_one_per_leg_and_slice(tmp_path: Path):
    labels, images = _volumes(tmp_path)
    subjects = reference_bank_subjects(labels, images, spacing_mm=0.5)
    assert [(str(s["side"]), int(s["slice_index"])) for s in subjects] == [("left", 1), ("right", 1), ("right", 3)]
    s = subjects[0]
    assert s["classes"].shape == s["tissue"].shape == s["ff"].shape and s["classes"].shape[:2] == (1, 3)
    assert s["classes"].dtype == np.uint8 and float(s["spacing_mm"]) == 0.5
    # leg 21 mm across plus 2 x 15 mm margin, at 0.5 mm
    assert s["classes"].shape[2] == pytest.approx(102, abs=2)
    assert (s["classes"][0, 0] == s["classes"][0, 2]).all()
    # only the leg on its own side: one connected disc of SOL
    assert (s["classes"][0, 1] == SOL).sum() * 0.25 == pytest.approx(np.pi * 8**2, rel=0.1)
    assert [float(x["t"][0]) for x in subjects] == [1.0, 1.0, 0.0]
    only_right = reference_bank_subjects(labels, images, spacing_mm=0.5, sides=("right",))
    assert [int(x["slice_index"]) for x in only_right] == [1, 3]
    assert float(only_right[1]["t"][0]) == 0.0  # t does not depend on the sides taken


def test_reference_bank_cli_writes_loadable_subjects(tmp_path: Path):
    labels, images = _volumes(tmp_path)
    out = tmp_path / "bank"
    assert main(["reference-bank", "--labels", str(labels), "--images", *map(str, images), "--out", str(out),
                 "--sides", "left"]) == 0
    assert [p.name for p in sorted(out.glob("subject_*.npz"))] == ["subject_ref_left_001.npz"]
    (group,) = load_bank_groups([out])
    assert str(group[0]["side"]) == "left" and group[0]["tissue"].max() <= max(T.values())


def _tiny_subject(cls: int) -> dict[str, np.ndarray]:
    c = np.zeros((1, 3, 16, 16), np.uint8)
    c[..., 4:12, 4:12] = cls
    tissue = (c > 0).astype(np.uint8)
    tissue[0, 0, 0, 0] = T["vessel"]  # every tissue id of the roles exists
    return {"classes": c, "tissue": tissue, "ff": np.zeros_like(c),
            "t": np.zeros(1, np.float32), "spacing_mm": np.float32(1.0)}


def _sampler(bank: list[dict[str, np.ndarray]], seed: int, weights: np.ndarray | None = None) -> SynthSampler:
    roles = {"background": 0, "muscle": 1, "fat": 3, "cortex": 5, "marrow": 6}
    return SynthSampler(bank, roles, [GM, SOL], len(REG.classes), (16, 16), 1.0, 1.0, seed, weights=weights)


def _drawn(sampler: SynthSampler, n: int) -> list[int]:
    out = []
    for _ in range(n):
        _, lab = sampler.item()
        out.append(int(lab.max()))
    return out


def test_sampler_weights_choose_subjects():
    bank = [_tiny_subject(GM), _tiny_subject(SOL)]
    assert set(_drawn(_sampler(bank, 0, np.array([0.0, 2.0])), 20)) <= {0, SOL}
    drawn = _drawn(_sampler(bank, 1, np.array([0.9, 0.1])), 60)
    assert drawn.count(GM) > 3 * drawn.count(SOL)
    with pytest.raises(ValueError):
        _sampler(bank, 0, np.array([1.0]))


def test_sampler_without_weights_keeps_the_uniform_stream():
    bank = [_tiny_subject(GM), _tiny_subject(SOL)]
    for seed in range(6):
        first = int(np.random.default_rng(seed).integers(2))
        assert _drawn(_sampler(bank, seed), 1)[0] in (0, bank[first]["classes"].max())


def test_bank_groups_and_shares(tmp_path: Path):
    for k, folder in ((0, "a"), (1, "a"), (2, "b")):
        write_subject(tmp_path / folder / f"subject_{k:06d}.npz", _tiny_subject(GM))
    groups = load_bank_groups([tmp_path / "a", tmp_path / "b"])
    assert [len(g) for g in groups] == [2, 1]
    w = subject_weights([len(g) for g in groups], [0.8, 0.2])
    assert w.tolist() == pytest.approx([0.4, 0.4, 0.2])
    with pytest.raises(ValueError):
        subject_weights([2, 1], [1.0])


def _dice_script():
    return load_script("reference_dice")


def _sided(ref: np.ndarray, names: dict[str, str]) -> Volume:
    """The sided label map of a side-less reference: the leg at x > 0 (the patient's right) named
    ``names["right"]``, the other ``names["left"]``."""
    x = AFFINE[0, 0] * np.arange(ref.shape[0]) + AFFINE[0, 3]
    out = np.zeros(ref.shape, np.int16)
    for k, name in enumerate(REG.classes[1:], start=1):
        for side, sign in (("right", 1), ("left", -1)):
            m = (ref == k) & (x * sign > 0)[:, None, None]
            out[m] = REG.sided_id(name, names[side])
    return Volume(out, AFFINE)


def test_reference_dice(tmp_path: Path):
    dice = _dice_script()
    labels, _ = _volumes(tmp_path)
    ref = load_volume(labels)
    slices = [("right", 1), ("right", 3), ("left", 1)]
    same = _sided(ref.array, {"right": "right", "left": "left"})
    res = dice.reference_dice(ref, same, slices, REG)
    assert res["right"]["soleus"] == 1.0 and res["left"]["subcutaneous_fat"] == 1.0 and res["right"]["tibia"] is None
    assert res["right"]["mean_triceps_surae"] == 1.0 and res["right"]["side_agreement"] == 1.0
    swapped = _sided(ref.array, {"right": "left", "left": "right"})
    res = dice.reference_dice(ref, swapped, slices, REG)
    assert res["right"]["soleus"] == 0.0 and res["right"]["side_agreement"] == 0.0
    shifted = np.roll(same.array, 4, axis=1)
    res = dice.reference_dice(ref, Volume(shifted, AFFINE), slices, REG)
    assert 0.3 < res["right"]["soleus"] < 0.95
    out = tmp_path / "dice.json"
    (tmp_path / "slices.json").write_text(json.dumps([{"side": s, "slice": z} for s, z in slices]))
    save_volume(same, tmp_path / "pred.nii.gz")
    assert dice.main(["--labels", str(labels), "--slices", str(tmp_path / "slices.json"), "--pred",
                      str(tmp_path / "pred.nii.gz"), "--sides", "left", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["dice"]) == {"left"}


def test_reference_images_are_cut_per_leg_and_image_with_their_signal(tmp_path: Path):
    labels, images = _volumes(tmp_path)
    pairs = reference_images(labels, images * 2, 1.0, ("right",))
    assert len(pairs) == 4  # two slices of the right leg, each image alone
    img, lab = pairs[0]
    assert img.shape == lab.shape and img.dtype == np.float32 and lab.dtype == np.int64
    assert float(np.percentile(img, 99.5)) == pytest.approx(1.0, abs=0.05)
    assert (lab == SOL).sum() == pytest.approx(np.pi * 8**2, rel=0.15)  # one leg only, at 1 mm
    assert img[lab == SOL].mean() > 0.8 and img[lab == 0].mean() < 0.5


def test_sampler_draws_its_share_of_real_items():
    real = [(np.full((20, 20), 0.5, np.float32), np.full((20, 20), FAT, np.int64))]
    bank = [_tiny_subject(GM)]
    roles = {"background": 0, "muscle": 1, "fat": 3, "cortex": 5, "marrow": 6}
    sampler = SynthSampler(bank, roles, [GM, SOL], len(REG.classes), (16, 16), 1.0, 1.0, 3, real=real,
                           real_share=0.5)
    drawn = [sampler.item() for _ in range(60)]
    from_real = [lab.max() == FAT for _, lab in drawn]
    assert 15 < sum(from_real) < 45
    img, lab = next(d for d, r in zip(drawn, from_real) if r)
    assert img.shape == lab.shape == (16, 16) and np.allclose(img[lab == FAT], 0.5)  # its own signal
    assert np.allclose(img[lab == 0], 0.0)  # zero where the crop leaves the slice
    none = SynthSampler(bank, roles, [GM, SOL], len(REG.classes), (16, 16), 1.0, 1.0, 3, real=[], real_share=0.5)
    assert all(lab.max() != FAT for _, lab in (none.item() for _ in range(10)))
