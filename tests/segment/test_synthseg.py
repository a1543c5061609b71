"""Random-contrast training images (pipeline.segment.synthseg) from calf tissue maps."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.labels import registry
from pipeline.segment.synthseg import SynthSampler, random_geometry
from pipeline.synth.calf import MUSCLES, TISSUE_IDS, CalfSpec, tissue_slice


def _bank(seed: int = 1) -> dict[str, np.ndarray]:
    spec = CalfSpec.random(np.random.default_rng(seed))
    subs = tissue_slice(spec, seed, 0.35, 1.25, thickness_mm=6.0)
    stack = {k: np.stack([getattr(s, k) for s in subs])[None] for k in ("classes", "tissue")}
    stack["ff"] = np.round(np.stack([s.ff for s in subs])[None] * 250).astype(np.uint8)
    return {**stack, "t": np.array([0.35], np.float32), "spacing_mm": np.float32(1.25)}


def test_tissue_maps_agree_with_classes():
    reg = registry("calf")
    spec = CalfSpec.random(np.random.default_rng(2))
    (s,) = tissue_slice(spec, 2, 0.4, 1.0)
    muscle_ids = [reg.class_id(m) for m in MUSCLES]
    assert np.isin(s.classes[s.tissue == TISSUE_IDS["muscle"]], muscle_ids).all()
    bone = np.isin(s.classes, [reg.class_id("tibia"), reg.class_id("fibula")])
    assert set(np.unique(s.tissue[bone])) <= {TISSUE_IDS["cortex"], TISSUE_IDS["marrow"]}
    assert (s.tissue[s.classes == reg.class_id("subcutaneous_fat")] != TISSUE_IDS["muscle"]).all()
    assert (s.tissue == TISSUE_IDS["vessel"]).any()
    assert s.ff[s.classes == reg.class_id("subcutaneous_fat")].mean() > 0.5


def test_sampler_items_are_label_aligned_and_vary_in_contrast():
    reg = registry("calf")
    roles = {"background": 0, "muscle": 1, "fat": 3, "cortex": 5, "marrow": 6}
    sampler = SynthSampler([_bank()], roles, [reg.class_id(m) for m in MUSCLES], len(reg.classes), (96, 96),
                           1.25, 2.5, seed=0)
    x, y = sampler.batch(6)
    assert x.shape == (6, 1, 96, 96) and y.shape == (6, 1, 96, 96) and y.dtype == torch.int64
    assert int(y.max()) < len(reg.classes)
    # contrast varies: the muscle/background intensity ratio differs between items
    ratios = []
    for i in range(6):
        m, b = x[i, 0][y[i, 0] == reg.class_id("soleus")], x[i, 0][y[i, 0] == 0]
        if m.numel() > 20 and b.numel() > 20:
            ratios.append(float(m.mean() / (b.mean() + 1e-3)))
    assert len(ratios) >= 3 and max(ratios) / min(ratios) > 1.5


def test_geometry_moves_image_and_classes_together():
    img = torch.zeros(2, 1, 32, 32)
    img[:, :, 8:16, 4:12] = 1.0
    lab = (img > 0.5).float()
    i2, l2 = random_geometry(img, lab, np.random.default_rng(0), elastic_px=0.0)
    inside = l2 > 0.5
    assert inside.any() and float(i2[inside].mean()) > 0.8 and float(i2[~inside].mean()) < 0.1


def test_skin_and_muscle_always_stand_out_from_air():
    """Whatever the random contrast, skin and muscle (signal in every MR sequence) are brighter than the air by at
    least the signal floor; fat may be dark (fat suppression)."""
    from pipeline.segment.synthseg import ContrastPrior, sample_intensities

    roles = {"background": 0, "muscle": 1, "fat": 3, "skin": 4, "cortex": 5, "marrow": 6}
    prior = ContrastPrior()
    rng = np.random.default_rng(0)
    means = np.array([sample_intensities(8, roles, rng, prior) for _ in range(2000)])
    assert means[:, 4].min() >= prior.signal_floor and means[:, 1].min() >= prior.signal_floor
    assert means[:, 0].max() <= prior.background_max
    assert means[:, 3].min() < prior.signal_floor  # dark fat still drawn


def _column_order(mirror_columns: bool) -> list[bool]:
    """For 40 random draws: is the class-2 blob (high columns, anterior) still at higher columns than class 1?"""
    img = torch.zeros(40, 1, 48, 48)
    lab = torch.zeros(40, 1, 48, 48)
    lab[:, :, 20:28, 8:14] = 1.0
    lab[:, :, 20:28, 34:40] = 2.0
    img[:] = lab / 2
    _, moved = random_geometry(img, lab, np.random.default_rng(3), elastic_px=0.0, mirror_columns=mirror_columns)
    cols = torch.arange(48.0)
    order = []
    for item in moved[:, 0]:
        c1 = float(cols[None, :].expand(48, 48)[item == 1].mean())
        c2 = float(cols[None, :].expand(48, 48)[item == 2].mean())
        order.append(c2 > c1)
    return order


def test_geometry_never_swaps_anterior_and_posterior_unless_asked():
    """Canonical slices have anterior at high column indices; a training sample must keep it there (rotation up to
    25 degrees moves the blobs, it does not reverse them), while row mirroring (left/right) stays on."""
    assert all(_column_order(mirror_columns=False))
    assert not all(_column_order(mirror_columns=True))


def test_septa_mostly_carry_the_fat_signal():
    """Intermuscular septa hold fat: in most samples they take the fat's intensity (bright lines when fat is bright,
    dark when it is suppressed), so that muscles of one intensity are outlined as in real images."""
    from pipeline.segment.synthseg import ContrastPrior, sample_intensities

    roles = {"background": 0, "muscle": 1, "septa": 2, "fat": 3, "skin": 4, "cortex": 5, "marrow": 6}
    prior = ContrastPrior()
    rng = np.random.default_rng(1)
    means = np.array([sample_intensities(8, roles, rng, prior) for _ in range(4000)])
    like_fat = np.abs(means[:, 2] - means[:, 3]) < 0.2
    assert abs(like_fat.mean() - (prior.p_fatty_septa + (1 - prior.p_fatty_septa) * 0.3)) < 0.08
    assert np.corrcoef(means[:, 2], means[:, 3])[0, 1] > 0.5
    no_septa = np.array([sample_intensities(8, {k: v for k, v in roles.items() if k != "septa"}, rng, prior)
                         for _ in range(4000)])
    assert abs(np.corrcoef(no_septa[:, 2], no_septa[:, 3])[0, 1]) < 0.1


def _areas_and_points(spec: CalfSpec, seed: int, t: float) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Areas (pixels) and pixel coordinates (x: RAS right, y: anterior) of the right leg's GM, GL and soleus."""
    reg = registry("calf")
    spec.legs = ("right",)
    (s,) = tissue_slice(spec, seed, t, 1.0, vessels=False)
    points = {m: np.argwhere(s.classes == reg.class_id(m))
              for m in ("gastrocnemius_medial", "gastrocnemius_lateral", "soleus")}
    return {m: len(xy) for m, xy in points.items()}, points


def test_shape_variety_varies_relative_sizes_but_keeps_the_layout():
    """Label maps with shape variety: the ratio of soleus to gastrocnemius area spreads over a much wider range than
    without it, while the right leg's medial head stays medial (smaller x) to the lateral one and the two heads
    together posterior (smaller y) to the soleus (centroids) in all but the most extreme draws (a medial head twice
    the soleus wraps forward along the medial side: at most 2 of 12)."""
    ratios: dict[float, list[float]] = {0.0: [], 1.0: []}
    wrapped = 0
    for sv in ratios:
        for seed in range(12):
            spec = CalfSpec.random(np.random.default_rng(seed))
            spec.shape_variety = sv
            areas, pts = _areas_and_points(spec, seed, 0.3)
            ratios[sv].append(np.log(areas["soleus"] / (areas["gastrocnemius_medial"] + areas["gastrocnemius_lateral"])))
            if sv:
                gm, gl, sol = pts["gastrocnemius_medial"], pts["gastrocnemius_lateral"], pts["soleus"]
                assert gm[:, 0].mean() < gl[:, 0].mean()
                wrapped += np.concatenate([gm, gl])[:, 1].mean() >= sol[:, 1].mean()
    assert wrapped <= 2
    assert np.std(ratios[1.0]) > 1.8 * np.std(ratios[0.0])


def test_worker_processes_draw_distinct_reproducible_streams():
    """Batches drawn in two worker processes (for an accelerator) differ between the workers and repeat, in order,
    with the same seed, and a worker's batch is the batch of a sampler seeded [seed, worker + 1] in this process."""
    from pipeline.workflow.calf_synthseg import batch_source, sampler_for

    bank = [_bank()]

    def first_batches(seed: int) -> list[torch.Tensor]:
        draw = batch_source(bank, (64, 64), 1.25, seed, 2, workers=2)
        return [draw()[0] for _ in range(4)]

    a, b = first_batches(3), first_batches(3)
    assert all(x.shape == (2, 1, 64, 64) for x in a)
    assert [x.sum().item() for x in a] == [x.sum().item() for x in b]  # the same batches in the same order
    assert len({round(x.sum().item(), 4) for x in a}) == 4
    own = sampler_for(bank, (64, 64), 1.25, [3, 1]).batch(2)[0]
    assert any(torch.allclose(own, x) for x in a)


def test_a_shifted_border_takes_its_septum_along() -> None:
    """Two muscles side by side with a septum on their border: muscle 1 grows 6 pixels into muscle 2, the septum
    moves with the border and none is left where the border was."""
    from pipeline.segment.synthseg import shift_borders

    muscle, septa = 1, 2
    classes = np.zeros((3, 80, 60), np.int64)
    classes[:, 10:70, 5:30], classes[:, 10:70, 30:55] = 1, 2
    tissue = np.where(classes > 0, muscle, 0)
    tissue[:, 10:70, 29:31] = septa
    shift_borders(classes, tissue, [1, 2], septa, muscle, np.random.default_rng(0), (6.0, 6.0), moves=1)
    rows = slice(20, 60)
    grown = 1 if (classes[1, rows, 33] == 1).all() else 2
    assert grown in (1, 2) and (classes[1, rows, 30:36] == grown).all()  # the border moved by 6 pixels
    cols = np.where((tissue[1, rows] == septa).any(axis=0))[0]
    assert cols.size and (np.abs(cols - (36 if grown == 1 else 24)) <= 3).all(), cols  # the septum is on it
    assert not (tissue[1, rows, 28:32] == septa).any()  # and gone from the old border


def test_a_posterior_tibia_puts_the_tibia_at_the_medial_fascia_and_the_fdl_behind_it():
    """Label maps with the whole :data:`POSTERIOR_TIBIA_SHIFT` (unrotated right legs, mid-calf, 8 subjects): the
    tibia moves medially (smaller x) and the flexor digitorum longus comes to lie behind it (its centroid farther
    below the tibia's in y than beside it in x) in more subjects than in the template. ``random_anatomy_spec`` draws
    a share of at most ``max_posterior_tibia`` of the shift, and without the option the spec is drawn as before (the
    banks of the shipped bundles are unchanged)."""
    from pipeline.synth.calf import POSTERIOR_TIBIA_SHIFT, random_anatomy_spec

    reg = registry("calf")
    assert random_anatomy_spec(np.random.default_rng(5), 0.5) == random_anatomy_spec(np.random.default_rng(5), 0.5, 0.0)
    drawn = random_anatomy_spec(np.random.default_rng(5), 0.0, 0.5).seed_shift
    share = drawn["tibia"][0] / POSTERIOR_TIBIA_SHIFT["tibia"][0]
    assert 0.0 <= share <= 0.5 and drawn["flexor_digitorum_longus"][1] == share * POSTERIOR_TIBIA_SHIFT[
        "flexor_digitorum_longus"][1]
    behind = {False: 0, True: 0}
    medial_shift = []
    for seed in range(8):
        tibia_x = {}
        for shifted in behind:
            spec = random_anatomy_spec(np.random.default_rng(seed))
            spec.legs, spec.rotation_deg = ("right",), {"left": 0.0, "right": 0.0}
            spec.seed_shift = dict(POSTERIOR_TIBIA_SHIFT) if shifted else {}
            (s,) = tissue_slice(spec, seed, 0.45, 1.0)
            tib = np.argwhere(s.classes == reg.class_id("tibia")).mean(axis=0)
            fdl = np.argwhere(s.classes == reg.class_id("flexor_digitorum_longus")).mean(axis=0)
            tibia_x[shifted] = tib[0]
            behind[shifted] += int(tib[1] - fdl[1] > abs(tib[0] - fdl[0]))
        medial_shift.append(tibia_x[True] - tibia_x[False])
    assert np.median(medial_shift) < -3.0  # pixels of 1 mm
    assert behind[True] > behind[False], behind
